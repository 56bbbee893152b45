#include "common/paths.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

namespace sp {

namespace {
bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
}  // namespace

std::string default_socket_path() {
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (xdg && *xdg && is_dir(xdg)) return std::string(xdg) + "/shell-pool/shell-pool.sock";
  std::string uid = std::to_string(::getuid());
  std::string run_user = "/run/user/" + uid;
  if (is_dir(run_user)) return run_user + "/shell-pool/shell-pool.sock";
  return "/tmp/shell-pool-" + uid + "/shell-pool.sock";
}

}  // namespace sp
