// The CLI's file commands, over the workspace file API (docs/protocol.md,
// "Workspace files"): `cp LOCAL :REMOTE`, `cp :REMOTE LOCAL` and `ls`.
// A remote path starts with ':' and is relative to the daemon's files root.
#pragma once

#include <string>

#include "client/client.h"

namespace sp::cli {

// Copies one file either way; `-` as LOCAL is stdin or stdout. A
// destination that is a directory (or ends in '/') gets the source's name.
int copy_file(Client& client, const std::string& from, const std::string& to);
// Lists a remote directory, `ls -l` style (or its entries as JSON).
int list_files(Client& client, const std::string& path, bool recursive, bool as_json);

}  // namespace sp::cli
