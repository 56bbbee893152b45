# The versioned contract between shell-pool processes: a job's spec (written
# by the frontend into the job slot's arena) and its result (written by the
# worker, or by the supervisor for a lost job, into the slot). Both are built
# and read in place in shared memory. Add fields only at the end.
@0xd8040e582b8f610d;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("sp::schema");

struct JobSpec {
  path @0 :Text;          # program: a path, or a name looked up in the job's PATH
  argv @1 :List(Text);    # argv[0] first
  env @2 :List(Text);     # "NAME=value": the command's whole environment
  cwd @3 :Text;           # empty: the daemon's working directory
  timeoutMs @4 :UInt64;   # 0: no timeout
  killGraceMs @5 :UInt32; # SIGTERM -> SIGKILL grace on timeout or cancel
  # Resource limits set in the child before exec (soft = hard); 0: not set.
  cpuSeconds @6 :UInt64;
  addressSpaceBytes @7 :UInt64;
  openFiles @8 :UInt64;
  processes @9 :UInt64;
  fileSizeBytes @10 :UInt64;
  # The job's cgroup memory limit (memory.max), where jobs get cgroups; 0: none.
  memoryBytes @11 :UInt64;
  # A terminal's size: the command runs on a new PTY (stdin, stdout and
  # stderr); 0 rows: pipes. (They fill the hole after killGraceMs.)
  ptyRows @12 :UInt16;
  ptyCols @13 :UInt16;
  # Byte strings replaced with "***" in the job's output before it is
  # stored anywhere (the job's own and its session's).
  secrets @14 :List(Data);
  # A remote job: the host's slot + 1 in the host table (0: local) and its
  # generation there. The command runs there through the remote worker.
  hostSlot @15 :UInt32;
  hostGeneration @16 :UInt32;
  # host_check: connect and log in only; the job's stdout is what was seen.
  hostCheck @17 :Bool;
}

struct JobResult {
  exitCode @0 :Int32;     # -1 when killed by a signal or never started
  signal @1 :Int32;       # terminating signal number, 0 if none
  failure @2 :Text;       # why the job failed to start, or was lost
  # A remote job's error: its RemoteError and RemotePhase (common/remote_error.h); 0: none.
  errorCode @3 :UInt8;
  errorPhase @4 :UInt8;
}
