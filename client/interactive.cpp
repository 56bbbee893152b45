#include "client/interactive.h"

#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/text.h"
#include "common/unique_fd.h"

namespace sp::cli {

namespace {

constexpr size_t kReadBytes = 64 * 1024;  // our stdin, per job_stdin_write
constexpr int kQueueFull = -32000;        // retryable: the job's stdin buffer is full

termios saved_terminal;
bool raw_mode = false;

void restore_terminal() {
  if (!raw_mode) return;
  ::tcsetattr(0, TCSAFLUSH, &saved_terminal);
  raw_mode = false;
}

// Our terminal's keys go to the job's terminal as they are (Ctrl-C too);
// restored at exit, also through die().
void make_raw() {
  if (::tcgetattr(0, &saved_terminal) != 0) return;
  termios t = saved_terminal;
  ::cfmakeraw(&t);
  if (::tcsetattr(0, TCSAFLUSH, &t) != 0) return;
  raw_mode = true;
  static bool registered = false;
  if (!registered) std::atexit(restore_terminal);
  registered = true;
}

std::string error_text(const json::object& m) {
  const json::object& e = m.at("error").as_object();
  return e.contains("message") ? std::string(e.at("message").as_string()) : json::serialize(e);
}

int64_t error_code(const json::object& m) {
  const json::object& e = m.at("error").as_object();
  return e.contains("code") && e.at("code").is_int64() ? e.at("code").as_int64() : 0;
}

int attach_loop(Client& client, const std::string& job_id, const AttachOptions& o);

}  // namespace

std::optional<std::pair<int, int>> terminal_size() {
  winsize ws{};
  if (!::isatty(0) || ::ioctl(0, TIOCGWINSZ, &ws) != 0 || ws.ws_row == 0 || ws.ws_col == 0)
    return std::nullopt;
  return std::pair{int(ws.ws_row), int(ws.ws_col)};
}

int attach(Client& client, const std::string& job_id, const AttachOptions& o) {
  ::signal(SIGPIPE, SIG_IGN);  // a closed stdout is an EPIPE (write_all exits, restoring)
  try {
    return attach_loop(client, job_id, o);
  } catch (const std::exception& e) {  // an answer not as expected
    restore_terminal();
    die(kProtocol, std::string("unexpected answer from the daemon: ") + e.what());
  }
}

namespace {

int attach_loop(Client& client, const std::string& job_id, const AttachOptions& o) {
  const bool tty = ::isatty(0);
  if (o.pty && tty) make_raw();
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGWINCH, SIGINT, SIGTERM, SIGHUP}) sigaddset(&signals, s);
  ::sigprocmask(SIG_BLOCK, &signals, nullptr);
  UniqueFd sfd(::signalfd(-1, &signals, SFD_CLOEXEC));

  uint64_t cursor = 0;
  auto ask_output = [&] {
    return client.send_async("job_output", {{"job_id", job_id},
                                            {"cursor", cursor},
                                            {"max_bytes", 1 << 20},
                                            {"output_encoding", "base64"},
                                            {"wait", 30}});
  };
  int64_t output_req = ask_output();
  // Our stdin: one write out at a time (its bytes kept to send again when
  // the job's buffer was full), `sent` bytes accepted before it.
  bool reading = true;
  int64_t write_req = 0;
  std::string writing;
  uint64_t sent = 0;
  auto write_stdin = [&](std::string bytes) {
    writing = std::move(bytes);
    std::string data;
    append_base64(data, writing);
    write_req = client.send_async(
        "job_stdin_write",
        {{"job_id", job_id}, {"data", std::move(data)}, {"encoding", "base64"}, {"offset", sent}});
  };
  std::string buf(kReadBytes, '\0');
  for (bool ended = false; !ended;) {
    // Our stdin only while we take more (fd -1: poll ignores it, HUP too).
    pollfd fds[3] = {{client.fd(), POLLIN, 0},
                     {sfd.get(), POLLIN, 0},
                     {reading && !write_req ? 0 : -1, POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      die(kProtocol, std::string("poll: ") + std::strerror(errno));
    }
    if (fds[2].revents) {
      ssize_t n = ::read(0, buf.data(), buf.size());
      if (n > 0) {
        write_stdin(buf.substr(0, size_t(n)));
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        reading = false;  // our stdin ended: so does the job's (^D for a terminal)
        if (o.pty && !tty) {
          write_stdin("\x04");
        } else if (!o.pty) {
          write_req = client.send_async("job_stdin_close", {{"job_id", job_id}});
          writing.clear();
        }
      }
    }
    if (fds[1].revents) {
      signalfd_siginfo si{};
      if (::read(sfd.get(), &si, sizeof si) == ssize_t(sizeof si)) {
        const int sig = int(si.ssi_signo);
        if (sig == SIGWINCH) {
          if (auto size = terminal_size(); size && o.pty)
            client.send_async("job_resize",
                              {{"job_id", job_id}, {"rows", size->first}, {"cols", size->second}});
        } else if (sig == SIGINT) {
          client.send_async("job_signal", {{"job_id", job_id}, {"signal", "INT"}});
        } else {
          client.send_async(o.shell ? "shell_close" : "job_cancel", {{"job_id", job_id}});
        }
      }
    }
    if (!fds[0].revents) continue;
    if (!client.receive()) {
      restore_terminal();
      die(kNoDaemon, "lost the connection to the daemon; job " + job_id +
                         " goes on: `shell-pool logs " + job_id + "` reads it");
    }
    while (auto m = client.take_message()) {
      const json::value& id = m->at("id");
      if (id == output_req) {
        if (m->contains("error")) {
          restore_terminal();
          die(kCannotRun, error_text(*m));
        }
        const json::object& r = m->at("result").as_object();
        for (const json::value& chunk : r.at("chunks").as_array()) {
          const json::object& c = chunk.as_object();
          write_all(c.at("stream") == "stderr" ? 2 : 1, from_base64(c.at("data")));
        }
        cursor = uint64_t(r.at("next_cursor").to_number<int64_t>());
        if (r.at("eof").as_bool()) {
          ended = true;
          break;
        }
        output_req = ask_output();
      } else if (write_req && id == write_req) {
        write_req = 0;
        if (!m->contains("error")) {
          sent += writing.size();
          continue;
        }
        const json::object& e = m->at("error").as_object();
        const json::value* data = e.if_contains("data");
        if (error_code(*m) == kQueueFull && data && data->is_object() &&
            data->as_object().contains("stdin_bytes")) {  // full: the rest again, when taken
          const json::object& d = data->as_object();
          const uint64_t took = uint64_t(d.at("stdin_bytes").to_number<int64_t>());
          writing.erase(0, size_t(std::min<uint64_t>(took - sent, writing.size())));
          sent = took;
          const json::value* after = d.if_contains("retry_after_ms");
          const int64_t wait_ms = after && after->is_number() ? after->to_number<int64_t>() : 50;
          ::usleep(useconds_t(std::clamp<int64_t>(wait_ms, 10, 1000) * 1000));
          write_stdin(std::move(writing));
          continue;
        }
        reading = false;  // the command stopped reading (or ended): no more of our stdin
      }
    }
  }
  restore_terminal();
  json::object status = client.call("job_status", {{"job_id", job_id}});
  if (status.at("truncated").as_bool())
    std::fprintf(stderr, "shell-pool: output truncated (the daemon's spool limit)\n");
  const int code = exit_code_of(status);
  client.call("job_forget", {{"job_id", job_id}});
  return code;
}

}  // namespace

}  // namespace sp::cli
