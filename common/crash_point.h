// Crash points: named places where a test can make a daemon role die, to
// prove the crash contract at exactly the instruction that matters.
//
// crash_point() is linked from one of two files. The shipped shell-poold
// links no_crash_points.cpp, where it does nothing. The test-only binary
// shell-poold-crashpoints links crash_points.cpp, where the process SIGKILLs
// itself (or sends itself SHELL_POOL_CRASH_SIGNAL, a number: 11 models a
// crash) at the point named by SHELL_POOL_CRASH_POINT, once per daemon: the
// first process to create the file SHELL_POOL_CRASH_MARKER (O_EXCL) dies,
// later ones (a restarted worker, say) go on. Without a marker every pass
// dies. Callable from any process and thread; never between vfork and exec.
//
// The points (docs/shm-layout.md says what each proves):
//   worker_start       worker: started, not yet ready (a boot failure)
//   after_claim        worker: job claimed from the ring, not yet running
//   after_spawn        worker: command started and its pgid recorded
//   mid_output_chunk   worker: output bytes in the ring, chunk unpublished
//   mid_spool_chunk    worker: spool bytes written, spool_end not moved
//   mid_enqueue        frontend: job slot queued, not yet on the ring
//   reading_output     frontend: while draining a job's output ring
//   service_queued     frontend: a service's generation queued, not yet noted
#pragma once

namespace sp {

void crash_point(const char* name);

}  // namespace sp
