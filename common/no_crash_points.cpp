// The shipped daemon: crash points do nothing (see crash_point.h).
#include "common/crash_point.h"

namespace sp {

void crash_point(const char*) {}

}  // namespace sp
