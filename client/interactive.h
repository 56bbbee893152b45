// The CLI's interactive side: follows a detached job that was started with
// its stdin open (shell_open, or job_submit with "stdin_open"), the way
// `docker exec -i` does. Our stdin goes to the job (job_stdin_write, in raw
// mode when it is a terminal and the job runs on a PTY, so that Ctrl-C
// reaches the job's terminal and its foreground process), its output comes
// to our stdout and stderr (job_output, waiting), our window size follows
// (job_resize on SIGWINCH), and SIGINT, SIGTERM and SIGHUP sent to the CLI
// are passed on (job_signal INT; job_cancel or shell_close).
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "client/client.h"

namespace sp::cli {

struct AttachOptions {
  bool pty = false;    // the job runs on a PTY
  bool shell = false;  // it is a shell (closed with shell_close)
};

// Runs until the job ends; returns the exit code that stands for its end
// (exit_code_of), having forgotten the job. The terminal is restored on
// every way out.
int attach(Client& client, const std::string& job_id, const AttachOptions& o);

// Our terminal's size (rows, cols), when stdin is a terminal.
std::optional<std::pair<int, int>> terminal_size();

}  // namespace sp::cli
