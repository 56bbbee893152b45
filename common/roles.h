// What the supervisor and the roles it starts agree on besides the shm
// segment: the fd numbers each role inherits (everything else is
// close-on-exec), and the exit statuses that mean something to the
// supervisor. docs/architecture.md has the table.
#pragma once

namespace sp::roles {

// The frontend's inherited fds; worker i's doorbell is kFirstWorkerBell + i.
// With --metrics-listen its TCP socket follows the last worker bell, and
// the frontend is told its number (--metrics-fd).
enum FrontendFd : int { kListen = 3, kFrontendBell = 4, kFrontendSubmit = 5, kFirstWorkerBell = 6 };
// A worker's inherited fds.
enum WorkerFd : int { kWorkerSubmit = 3, kWorkerBell = 4, kWorkerFrontendBell = 5 };

// A worker that ended because of --recycle-after, done with all its jobs:
// restarted at once, not counted as a crash.
inline constexpr int kExitRecycled = 75;
// A role whose exec failed (the supervisor also learns why through its
// error pipe): a boot failure, never a crash of a serving role.
inline constexpr int kExitExecFailed = 127;

}  // namespace sp::roles
