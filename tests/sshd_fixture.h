// Fixture of the remote-execution tests: real OpenSSH servers (sshd), agents
// (ssh-agent), keys (ssh-keygen), throwaway local users, and a TCP peer that
// never speaks, all on loopback addresses (127.0.0.0/8 needs no setup on
// Linux) and all in fresh temp dirs.
//
// Every child process is started by fork+exec with its output in a file of
// its temp dir, and is killed and reaped by its owner's destructor. Every
// wait is bounded. Nothing here asserts: a fixture that cannot start throws
// std::runtime_error with what the program said. Create the RAII objects on
// the thread that outlives them: their long-lived children die with the
// thread that forked them (PR_SET_PDEATHSIG), so a crashed test leaves none.
#pragma once

#include <sys/types.h>

#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "tests/daemon_harness.h"

namespace sp::test {

// ---- running the OpenSSH tools ----

struct ToolRun {
  std::string command;    // argv joined with spaces
  bool finished = false;  // false: killed after the timeout (or never started)
  int exit_code = -1;     // 128+N if signal N ended it
  std::string out, err;
  // The command, how it ended and both streams, for INFO().
  std::string describe() const;
};

// Runs `argv` (argv[0] an absolute path) in a process group of its own, with
// this process's environment changed by `env` ("NAME=value" sets NAME, a bare
// "NAME" removes it), stdin from `stdin_data` (else /dev/null), stdout and
// stderr through files in `dir`. The whole group is SIGKILLed if it overruns
// `timeout_s`. Asserts nothing: may run on other threads.
ToolRun run_tool(const std::vector<std::string>& argv, const std::string& dir,
                 const std::vector<std::string>& env = {}, double timeout_s = 30,
                 const std::optional<std::string>& stdin_data = std::nullopt);

// ---- keys ----

struct SshKeyPair {
  std::string private_path, public_path;
  std::string public_line;  // the .pub content without its newline: "type base64 comment"
  std::string passphrase;   // "" for an unencrypted key
};

// ssh-keygen -t `type` (rsa: 2048 bits) into `dir`/`name` and `dir`/`name`.pub,
// with comment `name`. Throws if ssh-keygen fails.
SshKeyPair make_key(const std::string& dir, const std::string& name,
                    const std::string& type = "ed25519", const std::string& passphrase = "");
// "SHA256:..." of a public key file (ssh-keygen -l -E sha256).
std::string fingerprint_of(const std::string& public_path);

// ---- TCP ----

// A TCP port that was free on `address` a moment ago (bound with port 0 and
// released): another process may take it first, so starters retry.
int free_port(const std::string& address);
// The first line a server sends on a new connection to address:port (without
// its CR LF), as far as it starts with "SSH-"; "" when the connection fails or
// no such line comes within `timeout_s`. With `source`, the connection comes
// from that local address. It answers with an identification line of its
// own, so that sshd logs the close with the peer's address.
std::string ssh_banner(const std::string& address, int port, double timeout_s,
                       const std::string& source = "");

// A TCP listener on `address` that never accepts: the kernel completes the
// handshakes of its backlog, so clients connect and then hear nothing (a host
// that accepts TCP and never speaks). Once the backlog is full, connects hang.
class RawTcpSilent {
 public:
  explicit RawTcpSilent(std::string address = "127.0.0.3");
  const std::string& address() const { return address_; }
  int port() const { return port_; }

 private:
  std::string address_;
  int port_ = 0;
  UniqueFd fd_;
};

// ---- sshd ----

// Fields have initializers so designated initializers may leave any out.
struct SshdOptions {
  std::string address = "127.0.0.2";
  std::string host_key_type = "ed25519";  // as ssh-keygen -t takes it
  int max_sessions = 10;                  // channels per connection (MaxSessions)
  std::string rekey_limit = {};           // RekeyLimit, such as "1M"; "": sshd's default
  bool password_auth = false;
  std::vector<std::string> extra_config = {};  // more sshd_config lines, appended
};

// A pid a move hands over: the moved-from owner no longer owns a process.
class OwnedPid {
 public:
  OwnedPid() = default;
  explicit OwnedPid(pid_t pid) : pid_(pid) {}
  OwnedPid(OwnedPid&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}
  OwnedPid& operator=(OwnedPid&& other) noexcept {
    pid_ = std::exchange(other.pid_, -1);
    return *this;
  }
  pid_t get() const { return pid_; }
  pid_t release() { return std::exchange(pid_, -1); }

 private:
  pid_t pid_ = -1;
};

// One /usr/sbin/sshd -D listening on options.address, with its own host key,
// config, authorized_keys and log (LogLevel VERBOSE) in a temp dir. Needs
// root (the privilege separation dir /run/sshd; logins as other users).
// Key logins are root's: sshd reads authorized_keys as the user who logs in,
// and the file is root's (0600); a SystemUser logs in with its password.
//
// Its processes are the listener, the listener's descendants (the
// per-connection sshd processes and the commands of the sessions) and any
// process whose SSH_CONNECTION names this server (a session's command that
// left the tree); stop(), cont(), kill_all() and the destructor act on all
// of them.
class Sshd {
 public:
  // Starts it and waits (10 s) until it sends its banner; throws if it does
  // not. `authorized_keys` are public_line values.
  explicit Sshd(SshdOptions options = {}, std::vector<std::string> authorized_keys = {});
  ~Sshd();  // kill_all()
  Sshd(Sshd&&) noexcept = default;
  Sshd(const Sshd&) = delete;
  Sshd& operator=(const Sshd&) = delete;

  const std::string& address() const { return options_.address; }
  int port() const { return port_; }
  pid_t pid() const { return pid_.get(); }  // the listener; -1 after kill_all()
  const std::string& dir() const { return dir_.path(); }
  const std::string& config_path() const { return config_path_; }
  const std::string& log_path() const { return log_path_; }
  std::string log() const;
  const std::string& host_key_type() const { return options_.host_key_type; }
  const std::string& host_key_public_path() const { return host_key_.public_path; }
  std::string host_key_fingerprint() const { return fingerprint_of(host_key_.public_path); }
  // "[address]:port type base64", for a known_hosts file.
  std::string known_hosts_line() const;

  // Replaces authorized_keys; sshd reads it at each authentication.
  void authorize(const std::vector<std::string>& public_lines);

  // Lines of the log that contain `what`, leaving out those of the readiness
  // probe (which connects from kProbeSource at each start), for counting
  // "Connection from" or "Accepted publickey".
  int count_in_log(const std::string& what) const;
  // Where the readiness probe connects from.
  static constexpr const char* kProbeSource = "127.83.80.1";

  // All its processes, as above (live ones; a zombie is gone).
  std::vector<pid_t> processes() const;
  // SIGSTOPs all its processes and waits until they are stopped: a stopped
  // server whose kernel still completes TCP handshakes. Throws if one does
  // not stop within 5 s.
  void stop();
  void cont();  // SIGCONTs all its processes
  // Stops and SIGKILLs all its processes, reaps the listener and waits (5 s)
  // until none is left. Idempotent.
  void kill_all();
  // kill_all(), a new host key of the same type, and a start on the same
  // port: the "host key changed" server.
  void restart_with_new_host_key();

 private:
  void write_config();
  bool start_once();
  std::set<pid_t> freeze(bool& stopped);
  [[noreturn]] void fail(const std::string& what);

  TempDir dir_;
  SshdOptions options_;
  std::string config_path_, log_path_, authorized_keys_path_;
  SshKeyPair host_key_;
  int host_key_generation_ = 0;
  int port_ = 0;
  OwnedPid pid_;
};

// ---- ssh-agent ----

// ssh-agent -D -a <dir>/agent.sock, up and answering once constructed.
class SshAgent {
 public:
  SshAgent();
  ~SshAgent();  // kills and reaps it
  SshAgent(SshAgent&&) noexcept = default;
  SshAgent(const SshAgent&) = delete;
  SshAgent& operator=(const SshAgent&) = delete;

  const std::string& socket_path() const { return socket_path_; }
  pid_t pid() const { return pid_.get(); }
  // ssh-add of the key (its passphrase given through SSH_ASKPASS); throws if
  // ssh-add fails.
  void add(const SshKeyPair& key);
  // "SSH_AUTH_SOCK=<socket>", for run_tool's env.
  std::string env() const { return "SSH_AUTH_SOCK=" + socket_path_; }

 private:
  TempDir dir_;
  std::string socket_path_;
  OwnedPid pid_;
};

// ---- local users ----

// A throwaway local user "spt" + 6 random lowercase letters, with a random
// password and the home dir /tmp/sp-test-XXXXXX (owned by it); root only.
// The destructor kills the user's processes and deletes the user.
class SystemUser {
 public:
  // Whether this process can create users (root, and useradd is there). A
  // test that needs one WARNs and returns when not.
  static bool available();

  SystemUser();
  ~SystemUser();
  SystemUser(SystemUser&& other) noexcept
      : home_(std::move(other.home_)),
        name_(std::exchange(other.name_, {})),
        password_(std::move(other.password_)),
        uid_(other.uid_) {}
  SystemUser(const SystemUser&) = delete;
  SystemUser& operator=(const SystemUser&) = delete;

  const std::string& name() const { return name_; }
  const std::string& password() const { return password_; }
  uid_t uid() const { return uid_; }
  const std::string& home() const { return home_.path(); }

 private:
  void remove();  // kills the user's processes and deletes it

  TempDir home_;
  std::string name_, password_;
  uid_t uid_ = 0;
};

// Live processes whose real uid is `uid`.
std::vector<pid_t> pids_of_uid(uid_t uid);
// The state letter of /proc/<pid>/stat ('R', 'S', 'T' for stopped...); 0 if gone.
char state_of(pid_t pid);

}  // namespace sp::test
