// SessionMethods: session_create, session_list and session_destroy over the
// shm session table (shm::SessionTable), which keeps sessions across a
// frontend restart. Used from the frontend's single thread.
#pragma once

#include <functional>
#include <string>

#include "frontend/connections.h"
#include "frontend/method_table.h"
#include "shm/session_table.h"

namespace sp::frontend {

class SessionMethods {
 public:
  // `destroyed`: told of each session destroyed (its services stop).
  SessionMethods(shm::SessionTable& sessions, Connections& out,
                 std::function<void(const std::string&)> destroyed)
      : sessions_(sessions), out_(out), destroyed_(std::move(destroyed)) {}
  void add_methods(MethodTable& methods);

 private:
  shm::SessionTable& sessions_;
  Connections& out_;
  std::function<void(const std::string&)> destroyed_;
};

}  // namespace sp::frontend
