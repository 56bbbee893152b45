// SessionMethods: session_create, session_list and session_destroy over the
// shm session table (shm::SessionTable), which keeps sessions across a
// frontend restart. Used from the frontend's single thread.
#pragma once

#include "frontend/connections.h"
#include "frontend/method_table.h"
#include "shm/session_table.h"

namespace sp::frontend {

class SessionMethods {
 public:
  SessionMethods(shm::SessionTable& sessions, Connections& out) : sessions_(sessions), out_(out) {}
  void add_methods(MethodTable& methods);

 private:
  shm::SessionTable& sessions_;
  Connections& out_;
};

}  // namespace sp::frontend
