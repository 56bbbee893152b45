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

}  // namespace

std::optional<std::pair<int, int>> terminal_size() {
  winsize ws{};
  if (!::isatty(0) || ::ioctl(0, TIOCGWINSZ, &ws) != 0 || ws.ws_row == 0 || ws.ws_col == 0)
    return std::nullopt;
  return std::pair{int(ws.ws_row), int(ws.ws_col)};
}

namespace {

// One attached job: the state of attach()'s loop and a handler per event.
class Attachment {
 public:
  Attachment(Client& client, const std::string& job_id, const AttachOptions& o)
      : client_(client), id_(job_id), o_(o), tty_(::isatty(0)) {}

  int run() {
    if (o_.pty && tty_) make_raw();
    sigset_t signals;
    sigemptyset(&signals);
    for (int s : {SIGWINCH, SIGINT, SIGTERM, SIGHUP}) sigaddset(&signals, s);
    ::sigprocmask(SIG_BLOCK, &signals, nullptr);
    UniqueFd sfd(::signalfd(-1, &signals, SFD_CLOEXEC));
    ask_output();
    while (!ended_) {
      // Our stdin only while we take more (fd -1: poll ignores it, HUP too).
      pollfd fds[3] = {{client_.fd(), POLLIN, 0},
                       {sfd.get(), POLLIN, 0},
                       {reading_ && !write_req_ ? 0 : -1, POLLIN, 0}};
      if (::poll(fds, 3, -1) < 0) {
        if (errno == EINTR) continue;
        die(kProtocol, std::string("poll: ") + std::strerror(errno));
      }
      if (fds[2].revents) on_stdin();
      if (fds[1].revents) on_signal(sfd.get());
      if (fds[0].revents) on_answers();
    }
    restore_terminal();
    json::object status = client_.call("job_status", {{"job_id", id_}});
    if (status.at("truncated").as_bool())
      std::fprintf(stderr, "shell-pool: output truncated (the daemon's spool limit)\n");
    const int code = exit_code_of(status);
    client_.call("job_forget", {{"job_id", id_}});
    return code;
  }

 private:
  void ask_output() {
    output_req_ = client_.send_async(
        "job_output", {{"job_id", id_}, {"cursor", cursor_}, {"max_bytes", 1 << 20}, {"wait", 30}});
  }

  void write_stdin(std::string bytes) {
    writing_ = std::move(bytes);
    write_req_ = client_.send_async("job_stdin_write",
                                    {{"job_id", id_}, {"data", writing_}, {"offset", sent_}});
  }

  void on_stdin() {
    ssize_t n = ::read(0, buf_.data(), buf_.size());
    if (n > 0) return write_stdin(buf_.substr(0, size_t(n)));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    reading_ = false;  // our stdin ended: so does the job's (^D for a terminal)
    if (o_.pty && !tty_) {
      write_stdin("\x04");
    } else if (!o_.pty) {
      write_req_ = client_.send_async("job_stdin_close", {{"job_id", id_}});
      writing_.clear();
    }
  }

  void on_signal(int sfd) {
    signalfd_siginfo si{};
    if (::read(sfd, &si, sizeof si) != ssize_t(sizeof si)) return;
    const int sig = int(si.ssi_signo);
    if (sig == SIGWINCH) {
      if (auto size = terminal_size(); size && o_.pty)
        client_.send_async("job_resize",
                           {{"job_id", id_}, {"rows", size->first}, {"cols", size->second}});
    } else if (sig == SIGINT) {
      client_.send_async("job_signal", {{"job_id", id_}, {"signal", "INT"}});
    } else {
      client_.send_async(o_.shell ? "shell_close" : "job_cancel", {{"job_id", id_}});
    }
  }

  void on_answers() {
    if (!client_.receive()) {
      restore_terminal();
      die(kNoDaemon, "lost the connection to the daemon; job " + id_ +
                         " goes on: `shell-pool logs " + id_ + "` reads it");
    }
    while (!ended_) {
      auto m = client_.take_message();
      if (!m) return;
      const json::value& id = m->at("id");
      if (id == output_req_) on_output(*m);
      if (write_req_ && id == write_req_) on_written(*m);
    }
  }

  void on_output(const json::object& m) {
    if (m.contains("error")) {
      restore_terminal();
      die(kCannotRun, error_text(m));
    }
    const json::object& r = m.at("result").as_object();
    for (const json::value& chunk : r.at("chunks").as_array()) {
      const json::object& c = chunk.as_object();
      write_all(c.at("stream") == "stderr" ? 2 : 1, bytes_of(c.at("data")));
    }
    cursor_ = uint64_t(r.at("next_cursor").to_number<int64_t>());
    ended_ = r.at("eof").as_bool();
    if (!ended_) ask_output();
  }

  void on_written(const json::object& m) {
    write_req_ = 0;
    if (!m.contains("error")) {
      sent_ += writing_.size();
      return;
    }
    const json::value* data = m.at("error").as_object().if_contains("data");
    if (error_code(m) == kQueueFull && data && data->is_object() &&
        data->as_object().contains("stdin_bytes")) {  // full: the rest again, when taken
      const json::object& d = data->as_object();
      const uint64_t took = uint64_t(d.at("stdin_bytes").to_number<int64_t>());
      writing_.erase(0, size_t(std::min<uint64_t>(took - sent_, writing_.size())));
      sent_ = took;
      const json::value* after = d.if_contains("retry_after_ms");
      const int64_t wait_ms = after && after->is_number() ? after->to_number<int64_t>() : 50;
      ::usleep(useconds_t(std::clamp<int64_t>(wait_ms, 10, 1000) * 1000));
      return write_stdin(std::move(writing_));
    }
    reading_ = false;  // the command stopped reading (or ended): no more of our stdin
  }

  Client& client_;
  const std::string& id_;
  const AttachOptions& o_;
  const bool tty_;
  uint64_t cursor_ = 0;  // of the job's output read so far
  int64_t output_req_ = 0;
  bool ended_ = false;
  // Our stdin: one write out at a time (its bytes kept to send again when
  // the job's buffer was full), `sent_` bytes accepted before it.
  bool reading_ = true;
  int64_t write_req_ = 0;
  std::string writing_;
  uint64_t sent_ = 0;
  std::string buf_ = std::string(kReadBytes, '\0');
};

}  // namespace

int attach(Client& client, const std::string& job_id, const AttachOptions& o) {
  ::signal(SIGPIPE, SIG_IGN);  // a closed stdout is an EPIPE (write_all exits, restoring)
  try {
    return Attachment(client, job_id, o).run();
  } catch (const std::exception& e) {  // an answer not as expected
    restore_terminal();
    die(kProtocol, std::string("unexpected answer from the daemon: ") + e.what());
  }
}

}  // namespace sp::cli
