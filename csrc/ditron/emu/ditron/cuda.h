// The emulated GPU: what ditron/cuda.h gives kernels, for the host C++ compiler, so that the
// device part of a generated CUDA file runs unchanged on the CPU (ditron/build/emulate.py
// puts this folder before csrc/ on the include path).
//
// Execution model. The loader queues a call's kernels (and host transfers) on a main and a
// side stream, then runs them (sync, below): the kernels of both streams run at the same
// time, their blocks resident on the SMs' resources, one block running at a time; the
// threads of a block are fibers on one OS thread, each running the kernel function with
// its own threadIdx.
// A fiber runs until it reaches a synchronization point (__syncthreads, the end of the
// kernel), then the next runnable fiber runs: deterministic, in thread order, or in an
// order drawn from DITRON_EMULATE_SEED. What the real hardware leaves undefined is made
// visible: shared memory holds NaN bytes (0xff) when a block starts; an asynchronous copy
// poisons its destination when issued and lands at the cp.async.wait_group that must
// wait for it (or never, if none does); a barrier that some thread of the block leaves
// unreached is an error, as is an instruction the emulator does not model. Errors end the
// launch with a message (ditron_emu_error), never a hang.
#pragma once
// What the generated file's device part sees is what NVRTC compiles (ditron's headers leave
// their host code out then).
#ifndef __CUDACC_RTC__
#define __CUDACC_RTC__ 1
#endif
#include <algorithm>
#include <chrono>
#include <csetjmp>
#include <csignal>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <ucontext.h>
#include <type_traits>
#include <utility>
#include <vector>

#include "ditron/half_types.h"

// ---- the CUDA language, for the host compiler
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __grid_constant__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Static shared arrays are static locals in one section, which every block start fills
// with NaN bytes (blocks run one at a time, so one copy serves them all). Each starts on a
// 64 KiB boundary: CUDA's static shared memory is at most 48 KiB, so at least 16 KiB of gap
// follows every array, where an access is out of bounds (the bounds checker needs the gap:
// an index past one array would otherwise land in the next). Zero-filled (@nobits: the
// gaps take no room in the library file); the shared window kernels see packs the arrays.
#define DITRON_EMU_SHARED_SECTION __attribute__((section("ditron_emu_shared,\"aw\",@nobits#"), aligned(65536)))
#define __shared__ DITRON_EMU_SHARED_SECTION static
// Guard arrays at both ends of the section (the compiler emits variables in or against
// source order: this one and the one the loader appends after the kernels).
#define DITRON_EMU_SHARED_GUARD(name) DITRON_EMU_SHARED_SECTION __attribute__((used)) static unsigned char name[65536]
DITRON_EMU_SHARED_GUARD(ditron_emu_guard_head);
// CUDA's vector types, with their alignment (vector loads and stores use them)
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };

namespace ditron {
namespace emu {

struct uint3_ { unsigned x, y, z; };

[[noreturn]] void fail(const std::string& what);
// the profiler's steps (defined with it, below)
inline size_t profile_launch(const char* kernel, const unsigned* grid, const unsigned* block, size_t smem);
inline void profile_block_start(int threads);
inline void profile_epoch();

struct Fiber {
  void* sp = nullptr;              // saved stack pointer while switched out
  // mapped with an inaccessible guard page below it (a fault there is a stack overflow)
  struct Unmap { void operator()(unsigned char* p) const; };
  std::unique_ptr<unsigned char, Unmap> stack;
  uint3_ tid{0, 0, 0};
  int linear = 0;                  // thread number within the block
  enum State { READY, AT_BARRIER, AT_WARP, WAITING, DONE } state = READY;
  // WAITING: blocked until can_go() (an mbarrier phase); waits_for() says on what;
  // external: on memory that another rank or the host changes (an NVSHMEM signal)
  std::function<bool()> can_go;
  std::function<std::string()> waits_for;
  bool external = false;
  long barriers = 0;               // block barriers reached so far
  const char* barrier_what = "__syncthreads";   // the call that reached the last one
  // cp.async: copies issued and not landed, by group (the last group is open)
  struct Copy { void* dst; std::vector<unsigned char> data; };
  std::vector<std::vector<Copy>> groups{1};
};

// Lanes of a warp meeting at a warp-wide instruction (ldmatrix, mma.sync): each arriving
// lane leaves its operands; the last one runs the instruction for all of them.
using Collective = void (*)(void* const* lane_args, int lanes);
struct WarpMeeting {
  int size = 32;                   // 32: a warp; 128: a warpgroup
  Collective run = nullptr;
  const char* what = nullptr;
  int arrived = 0;
  void* args[128] = {};
};

struct Launch {
  void (*body)(void**) = nullptr;  // the kernel, called with its parameters
  void** params = nullptr;
  uint3_ grid{1, 1, 1}, block{1, 1, 1}, block_idx{0, 0, 0};
  std::unique_ptr<unsigned char[]> dynamic_storage;
  unsigned char* dynamic_shared = nullptr;   // SHARED_ALIGN-aligned, in dynamic_storage
  size_t dynamic_bytes = 0;
  std::vector<Fiber> fibers;
  std::vector<WarpMeeting> warps, warpgroups;
  std::vector<void (*)()> block_start;   // what other headers reset per block (mbarriers)
  // what other headers keep per block, swapped with a parked block's copy (see Block)
  std::vector<void (*)(std::shared_ptr<void>&)> block_swap;
  unsigned epoch = 0;                    // barriers the block has passed (the race detector's clock)
  int in_runtime = 0;                    // > 0: the emulator's own code runs (its accesses are not the kernel's)
  Fiber* current = nullptr;
  void* scheduler_sp = nullptr;
  std::string error;
  void* last_pc = nullptr;               // where in the kernel the instruction being checked is
  std::mt19937_64 order;
  bool shuffled = false;
  size_t profile_at = 0;                 // the running kernel's entry in the profiler's launches
};

// Whether an external wait (every resident block waiting, some for another rank) must end:
// the error, or "" to poll on; `waits` describes what waits (made only for the error: the
// scheduler polls often). nvshmem.h sets it (the world's timeout, failed peers); without it
// (no other rank can write) such a wait is a deadlock at once.
using ExternalCheck = std::string (*)(std::chrono::steady_clock::time_point since,
                                      const std::function<std::string()>& waits);
inline ExternalCheck external_check = nullptr;
inline int (*other_writers)() = nullptr;      // how many other processes (ranks) write this memory

struct Grid;
// A resident block that is not running: its part of the Launch (fibers, warps, index, clock,
// dynamic shared memory), its static shared arrays, and what other headers keep per block
// (the sanitizer's shadow, mbarriers, the profiler's lanes). Blocks run one at a time; the
// scheduler switches only when the running block finishes or every thread of it waits on
// memory that another block or rank changes, so the copying is rare.
struct Block {
  uint3_ block_idx{0, 0, 0};
  std::vector<Fiber> fibers;
  std::vector<WarpMeeting> warps, warpgroups;
  unsigned epoch = 0;
  std::unique_ptr<unsigned char[]> dynamic_storage;
  unsigned char* dynamic_shared = nullptr;
  std::vector<unsigned char> shared_copy;       // the static arrays' bytes while parked
  std::vector<std::shared_ptr<void>> parked;    // Launch::block_swap's states while parked
  Grid* grid = nullptr;                         // the kernel launch it belongs to
  size_t sm = 0;                                // the SM it is resident on
  bool started = false, stalled = false;
};

// (a namespace-scope variable, not a function's static: no initialization guard to
// check at every call)
inline Launch state_storage;
inline Launch& state() { return state_storage; }

}  // namespace emu
}  // namespace ditron

// The fiber switch (x86-64 System V): save the callee-saved registers on this stack, store
// the stack pointer in *from, load `to` and restore its registers.
#if !defined(__x86_64__)
#error "the emulated GPU switches fibers with x86-64 code; this machine is not x86-64"
#endif
extern "C" void ditron_emu_switch(void** from, void* to);
__asm__(R"(
.text
.globl ditron_emu_switch
.type ditron_emu_switch,@function
ditron_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size ditron_emu_switch, .-ditron_emu_switch
)");

extern "C" unsigned char __start_ditron_emu_shared[] __attribute__((weak));
extern "C" unsigned char __stop_ditron_emu_shared[] __attribute__((weak));

namespace ditron {
namespace emu {

constexpr unsigned char POISON = 0xff;   // NaN as float, half and bfloat16
constexpr size_t STACK_BYTES = 128 * 1024;   // per thread, above its guard page
constexpr size_t GUARD_PAGE = 4096;
inline void Fiber::Unmap::operator()(unsigned char* p) const { munmap(p, GUARD_PAGE + STACK_BYTES); }
constexpr size_t SHARED_ALIGN = 1024;    // the widest alignment kernels ask of dynamic shared memory
constexpr size_t GUARD_BYTES = 64 * 1024; // around dynamic shared memory and (the loader's) arguments

// Where a kernel's memory lies, for the bounds checker: the static shared arrays (their
// extents in the section, read by the loader from the library's symbols), and the
// arguments and temporaries of the current call (the loader gives each a guard zone of
// GUARD_BYTES on both sides, ditron/build/emulate.py). In the shared window kernels see
// (cvta offsets, mbarrier and wgmma descriptor addresses) the dynamic shared memory comes
// first, then the static arrays, each SHARED_ALIGN-aligned.
struct SharedArray { size_t at, bytes, window; };   // at: offset in the section
struct Region { const unsigned char* begin; size_t bytes; };
struct Memory {
  std::vector<SharedArray> arrays;   // by offset in the section
  bool arrays_known = false;
  size_t static_window = 0;          // window bytes of the static arrays
  std::vector<Region> regions;
};
inline Memory memory_storage;
inline Memory& memory() { return memory_storage; }
inline size_t section_bytes() {
  return __start_ditron_emu_shared ? size_t(__stop_ditron_emu_shared - __start_ditron_emu_shared) : 0;
}
inline void set_shared_arrays(int n, const uint64_t* at, const uint64_t* bytes) {
  Memory& m = memory();
  m.arrays.clear();
  for (int i = 0; i < n; ++i) m.arrays.push_back({at[i], bytes[i], 0});
  std::sort(m.arrays.begin(), m.arrays.end(), [](const SharedArray& a, const SharedArray& b) { return a.at < b.at; });
  size_t w = 0;
  for (SharedArray& a : m.arrays) {
    a.window = w;
    w = (w + a.bytes + SHARED_ALIGN - 1) & ~(SHARED_ALIGN - 1);
  }
  m.static_window = w;
  m.arrays_known = true;
}
// The static array holding the section offset `at`, or nullptr (a gap between arrays).
inline const SharedArray* array_at(size_t at) {
  Memory& m = memory();
  if (!m.arrays_known) {      // (a loader that gave no table: the whole section, unchecked)
    const uint64_t zero = 0, all = section_bytes();
    set_shared_arrays(all ? 1 : 0, &zero, &all);
  }
  auto it = std::upper_bound(m.arrays.begin(), m.arrays.end(), at,
                             [](size_t v, const SharedArray& a) { return v < a.at; });
  if (it == m.arrays.begin()) return nullptr;
  --it;
  return at < it->at + it->bytes ? &*it : nullptr;
}

inline std::string block_name(const uint3_& b) {
  return "block (" + std::to_string(b.x) + ", " + std::to_string(b.y) + ", " + std::to_string(b.z) + ")";
}
// Thread f of the block with index b (default: the running block).
inline std::string thread_name(const Fiber& f, const uint3_& b) {
  return "thread (" + std::to_string(f.tid.x) + ", " + std::to_string(f.tid.y) + ", " + std::to_string(f.tid.z) +
         ") of " + block_name(b);
}
inline std::string thread_name(const Fiber& f) { return thread_name(f, state().block_idx); }

// An error inside a fiber: recorded, and the launch ends (the fiber is abandoned; kernel
// frames hold no objects that need destroying). Outside a fiber (the scheduler checking a
// wait): an exception that the launch turns into its error.
struct Failure { std::string what; };
inline std::string where_pc() {
  // {pc:0x...} is turned into the source line by the loader (ditron/build/emulate.py)
  Launch& l = state();
  Dl_info info;
  std::string out;
  if (l.last_pc && dladdr(l.last_pc, &info) && info.dli_fbase) {
    char buf[40];
    std::snprintf(buf, sizeof buf, " {pc:0x%lx}",
                  static_cast<unsigned long>(static_cast<char*>(l.last_pc) - static_cast<char*>(info.dli_fbase)));
    out = buf;
  }
  l.last_pc = nullptr;
  return out;
}

[[noreturn]] inline void fail(const std::string& what) {
  Launch& l = state();
  if (!l.current) throw Failure{what};
  if (l.error.empty()) l.error = thread_name(*l.current) + ": " + what + where_pc();
  Fiber* f = l.current;
  f->state = Fiber::DONE;
  ditron_emu_switch(&f->sp, l.scheduler_sp);
  std::abort();     // (never resumed)
}

inline Fiber& self() {
  Launch& l = state();
  if (!l.current) fail("a device function was called outside a kernel");
  return *l.current;
}

inline void yield_to_scheduler() {
  Fiber& f = self();
  ditron_emu_switch(&f.sp, state().scheduler_sp);
}

extern "C" inline void ditron_emu_fiber_entry() {
  Launch& l = state();
  l.body(l.params);
  l.current->state = Fiber::DONE;
  ditron_emu_switch(&l.current->sp, l.scheduler_sp);
}

inline void start_fiber(Fiber& f) {
  if (!f.stack) {
    void* m = mmap(nullptr, GUARD_PAGE + STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) fail("no memory for a thread's stack (mmap failed)");
    mprotect(m, GUARD_PAGE, PROT_NONE);
    f.stack.reset(static_cast<unsigned char*>(m));
  }
  uintptr_t top = reinterpret_cast<uintptr_t>(f.stack.get() + GUARD_PAGE + STACK_BYTES) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                                            // the entry's return address
  *--sp = reinterpret_cast<void*>(&ditron_emu_fiber_entry);    // where the first switch returns
  for (int i = 0; i < 6; ++i) *--sp = nullptr;                // rbp rbx r12 r13 r14 r15
  f.sp = sp;
  f.state = Fiber::READY;
  f.barriers = 0;
  f.groups.assign(1, {});
}

inline void poison_shared() {
  if (__start_ditron_emu_shared != nullptr && __stop_ditron_emu_shared > __start_ditron_emu_shared)
    std::memset(__start_ditron_emu_shared, POISON, __stop_ditron_emu_shared - __start_ditron_emu_shared);
  Launch& l = state();
  if (l.dynamic_bytes) std::memset(l.dynamic_shared, POISON, l.dynamic_bytes);
}

// A memory fault in kernel code (a wild pointer, a stack overflow) ends the launch with an
// error instead of the process: while a launch runs, SIGSEGV and SIGBUS are caught (on
// their own stack), and the handler jumps back to the scheduler, abandoning the fiber.
struct FaultTrap {
  sigjmp_buf back;                 // set by the scheduler before it switches to a fiber
  struct sigaction old_segv, old_bus;
  stack_t old_stack;
  std::unique_ptr<unsigned char[]> stack{new unsigned char[64 * 1024]};
};
inline FaultTrap trap_storage;
inline FaultTrap& trap() { return trap_storage; }
extern "C" inline void ditron_emu_on_fault(int sig, siginfo_t* info, void* context) {
  Launch& l = state();
  FaultTrap& t = trap();
  if (!l.current) {                // not the kernel's fault: the previous handler's business
    sigaction(sig, sig == SIGSEGV ? &t.old_segv : &t.old_bus, nullptr);
    return;                        // (the instruction faults again, under that handler)
  }
  const unsigned char* a = static_cast<const unsigned char*>(info->si_addr);
  const unsigned char* base = l.current->stack.get();
  const bool overflow = a >= base && a < base + GUARD_PAGE;
  ++l.in_runtime;                  // (what follows is not the kernel's: no checks of its accesses)
  l.last_pc = reinterpret_cast<void*>(static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_RIP] + 1);
  char buf[160];
  if (overflow)
    std::snprintf(buf, sizeof buf, "stack overflow: the thread's local variables take more than the emulator's "
                  "%zu KiB per thread", STACK_BYTES / 1024);
  else
    std::snprintf(buf, sizeof buf, "a memory access at address %p, which is not mapped (a wild pointer)", info->si_addr);
  l.error = thread_name(*l.current) + ": " + buf + where_pc();
  l.current->state = Fiber::DONE;
  siglongjmp(t.back, 1);
}
struct FaultScope {               // the handlers installed for one launch
  FaultScope() {
    FaultTrap& t = trap();
    stack_t ss{};
    ss.ss_sp = t.stack.get();
    ss.ss_size = 64 * 1024;
    sigaltstack(&ss, &t.old_stack);
    struct sigaction sa{};
    sa.sa_sigaction = &ditron_emu_on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;   // (NODEFER: the jump out leaves no signal blocked)
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &t.old_segv);
    sigaction(SIGBUS, &sa, &t.old_bus);
  }
  ~FaultScope() {
    FaultTrap& t = trap();
    sigaction(SIGSEGV, &t.old_segv, nullptr);
    sigaction(SIGBUS, &t.old_bus, nullptr);
    sigaltstack(&t.old_stack, nullptr);
  }
};

// Start the running block: fresh shared memory (NaN bytes), per-block state reset, fibers
// at the kernel's entry.
inline void begin_block() {
  Launch& l = state();
  poison_shared();
  l.epoch = 0;
  l.in_runtime = 0;
  for (void (*reset)() : l.block_start) reset();
  profile_block_start(static_cast<int>(l.fibers.size()));
  for (Fiber& f : l.fibers) start_fiber(f);
}

enum BlockRun { BLOCK_DONE, BLOCK_FAILED, BLOCK_STALLED };

// Run the running block: every fiber to its next synchronization point, in turn, until all
// are done (or an error; or every thread waits and some wait on external memory: stalled,
// for the scheduler to run other blocks meanwhile).
inline BlockRun run_block() {
  Launch& l = state();
  std::vector<Fiber*> ready;
  for (;;) {
    ready.clear();
    for (Fiber& f : l.fibers) {
      if (f.state == Fiber::WAITING && f.can_go()) f.state = Fiber::READY;
      if (f.state == Fiber::READY) ready.push_back(&f);
    }
    if (ready.empty()) {
      for (const Fiber& f : l.fibers) {
        if (f.state != Fiber::AT_WARP) continue;
        const WarpMeeting* m = &l.warps[f.linear / 32];
        if (m->arrived == 0) m = &l.warpgroups[f.linear / 128];
        const char* unit = m->size == 32 ? "warp" : "warpgroup";
        l.error = thread_name(f) + " waits in " + m->what + " (an instruction of the whole " + unit + ") for "
                  "threads of its " + unit + " that never reach it: only " + std::to_string(m->arrived) +
                  " of them did (the others finished or wait elsewhere)";
        return BLOCK_FAILED;
      }
      std::string waits;
      bool external = false;
      for (const Fiber& f : l.fibers)
        if (f.state == Fiber::WAITING) {
          waits += (waits.empty() ? "" : "; ") + thread_name(f) + " waits for " + f.waits_for();
          external = external || f.external;
        }
      if (external) return BLOCK_STALLED;     // another block or rank may set it
      if (!waits.empty()) {
        l.error = "deadlock: every thread of the block waits: " + waits;
        return BLOCK_FAILED;
      }
      const Fiber* waiting = nullptr;
      const Fiber* done = nullptr;
      for (const Fiber& f : l.fibers) (f.state == Fiber::AT_BARRIER ? waiting : done) = &f;
      if (!waiting || !done) profile_epoch();
      if (!waiting) return BLOCK_DONE;                               // every thread finished
      if (done) {
        l.error = thread_name(*waiting) + " waits at " + waiting->barrier_what + " (its barrier number " +
                  std::to_string(waiting->barriers) + ") that " + thread_name(*done) +
                  " never reaches: it finished the kernel (a barrier must be reached by every "
                  "thread of the block)";
        return BLOCK_FAILED;
      }
      for (Fiber& f : l.fibers) f.state = Fiber::READY;       // everyone arrived: release
      ++l.epoch;
      continue;
    }
    if (l.shuffled) std::shuffle(ready.begin(), ready.end(), l.order);
    for (Fiber* f : ready) {
      l.current = f;
      if (sigsetjmp(trap().back, 0) == 0) ditron_emu_switch(&l.scheduler_sp, f->sp);
      l.current = nullptr;
      if (!l.error.empty()) return BLOCK_FAILED;
    }
  }
}

// The kernel table of a generated file (written by ditron/build/emulate.py after the kernels).
struct Kernel { const char* name; void (*body)(void**); };

// Each parameter is copied out of the loader's memory (which need not be aligned for it,
// as cuLaunchKernel's parameter pointers need not be).
template <class T> T param(void* p) {
  T v;
  std::memcpy(static_cast<void*>(&v), p, sizeof(T));
  return v;
}
template <class... P, size_t... I>
void call_with(void (*fn)(P...), void** params, std::index_sequence<I...>) {
  fn(param<std::remove_cv_t<std::remove_reference_t<P>>>(params[I])...);
}
template <class... P> void call(void (*fn)(P...), void** params) {
  call_with(fn, params, std::index_sequence_for<P...>{});
}

// ---- the device: streams of queued work (kernels, the host's transfers and waits), and
// the blocks of the kernels that run at the same time on the SMs' resources.
//
// The loader queues a call's work (ditron_emu_queue_*: a kernel, a host operation, the
// main stream waiting for the side stream) and then runs the device until every stream is
// empty (sync). A stream's head runs when what it waits for is done: a kernel's blocks
// join the running blocks, a host transfer happens, a host wait holds. Work on the side
// stream first waits for everything queued on the main stream before it (a fork), as the
// compiled host code's events make it.
//
// Blocks take an SM's resources (warps, a block slot, shared memory, registers) while they
// are resident: a block starts on an SM with room for it. Blocks of the kernel launched
// first are dispatched first (the next kernel's blocks take the room that is left); with
// DITRON_EMULATE_SEED, the kernel and the block are drawn from the seed (the hardware
// promises no order). One block runs at a time, until it finishes or every thread of it
// waits and some wait on memory that another block, the host or another rank writes (it
// is parked: another resident block runs, or a new one starts). When nothing can run and
// no other rank can write, that is a deadlock; a residency deadlock when blocks still wait
// for room on an SM.
struct Resources { uint64_t warps = 0, blocks = 0, shared = 0, registers = 0; };
inline bool fits(const Resources& used, const Resources& need, const Resources& cap) {
  return used.warps + need.warps <= cap.warps && used.blocks + need.blocks <= cap.blocks &&
         used.shared + need.shared <= cap.shared && used.registers + need.registers <= cap.registers;
}
inline void take(Resources& used, const Resources& need) {
  used.warps += need.warps, used.blocks += need.blocks, used.shared += need.shared, used.registers += need.registers;
}
inline void give_back(Resources& used, const Resources& need) {
  used.warps -= need.warps, used.blocks -= need.blocks, used.shared -= need.shared, used.registers -= need.registers;
}
// The most blocks one emulated launch may have (its dispatch order is a list): far more
// than a test-sized shape needs, and a clear error instead of exhausting memory.
constexpr uint64_t MAX_GRID_BLOCKS = uint64_t(1) << 24;

struct Grid {
  const Kernel* kernel = nullptr;
  void** params = nullptr;
  uint3_ dims{1, 1, 1}, block{1, 1, 1};
  unsigned threads = 1, smem = 0;
  Resources need;                     // per block
  int stream = 0, id = 0;             // id: the loader's number for the launch
  std::vector<uint3_> order;          // the blocks, in dispatch order
  size_t next = 0, resident = 0;      // blocks started, and resident now
  size_t profile_at = 0;
  bool started = false;
  std::vector<std::unique_ptr<Block>> spare;   // finished blocks (their fibers keep their stacks)
  bool done() const { return started && next == order.size() && resident == 0; }
};

// A host operation on a stream: `run` does it, or says it must wait (false; it is tried
// again); `waits_for` describes the wait for messages.
struct HostOp {
  std::function<bool()> run;
  std::function<std::string()> waits_for;
};
struct StreamOp {
  std::unique_ptr<Grid> grid;         // a kernel, or
  HostOp host;                        // a host operation, or
  int after_stream = -1;              // a wait for that stream's first `after` operations
  size_t after = 0;
  size_t seq = 0;                     // its place in the order the host queued all work
};
struct Stream {
  std::vector<StreamOp> ops;          // queued, in order; ops[head] is next
  size_t head = 0;
};
inline const char* stream_name(int s) { return s ? "the side stream" : "the main stream"; }

struct Device {
  Stream streams[2];
  std::vector<Grid*> running;         // started kernels, in start order (dispatch priority)
  std::vector<std::unique_ptr<Block>> resident;
  Block* active = nullptr;            // whose state is in the Launch
  Resources sm_capacity{64, 32, 167936, 65536};
  std::vector<Resources> sms = std::vector<Resources>(108);
  bool sms_chosen = false;            // DITRON_EMULATE_SMS (for messages)
  size_t cursor = 0;                  // the SM the next block is tried on first
  int failed_launch = -1;             // the launch an error belongs to (-1: none)
  size_t queued = 0;                  // operations queued (their seq)
  void clear() {
    for (Stream& s : streams) s.ops.clear(), s.head = 0;
    queued = 0;
    running.clear();
    resident.clear();
    active = nullptr;
    for (Resources& r : sms) r = Resources{};
  }
};
inline Device device_storage;
inline Device& device() { return device_storage; }

inline void set_sms(unsigned count, const uint64_t* capacity, int chosen) {
  Device& d = device();
  d.sms.assign(std::max(1u, count), Resources{});
  d.sm_capacity = {capacity[0], capacity[1], capacity[2], capacity[3]};
  d.sms_chosen = chosen != 0;
}

inline void push(int stream, StreamOp op) {
  Device& d = device();
  op.seq = d.queued++;
  d.streams[stream].ops.push_back(std::move(op));
}
inline void queue(int stream, StreamOp op) {
  if (stream == 1) {        // (a fork: the side stream waits for the main stream's work so far)
    StreamOp fork;
    fork.after_stream = 0;
    fork.after = device().streams[0].ops.size();
    push(1, std::move(fork));
  }
  push(stream, std::move(op));
}
// The main stream waits for everything queued on the side stream so far.
inline void queue_join() {
  StreamOp op;
  op.after_stream = 1;
  op.after = device().streams[1].ops.size();
  push(0, std::move(op));
}

inline std::string resources_text(const Resources& r) {
  return std::to_string(r.warps) + " warps, " + std::to_string(r.shared) + " bytes of shared memory" +
         (r.registers ? ", " + std::to_string(r.registers) + " registers" : "");
}

// Queue a kernel launch (0; or 1 with the error in state().error).
inline int queue_launch(int stream, const Kernel& k, int id, const unsigned* grid, const unsigned* block,
                        unsigned smem, void** params, const uint64_t* need) {
  Launch& l = state();
  const unsigned n = block[0] * block[1] * block[2];
  if (n == 0 || n > 1024) {
    l.error = std::string("kernel ") + k.name + ": a block of " + std::to_string(n) + " threads (1 to 1024)";
    return 1;
  }
  const uint64_t blocks = uint64_t(grid[0]) * grid[1] * grid[2];
  if (blocks > MAX_GRID_BLOCKS) {
    l.error = std::string("kernel ") + k.name + ": a grid of " + std::to_string(blocks) + " blocks; the emulated GPU "
              "runs at most " + std::to_string(MAX_GRID_BLOCKS) + " blocks a launch (emulate a smaller shape)";
    return 1;
  }
  auto g = std::make_unique<Grid>();
  g->kernel = &k;
  g->params = params;
  g->dims = {grid[0], grid[1], grid[2]};
  g->block = {block[0], block[1], block[2]};
  g->threads = n;
  g->smem = smem;
  g->need = {need[0], 1, need[1], need[2]};
  g->stream = stream;
  g->id = id;
  const Device& d = device();
  if (!fits(Resources{}, g->need, d.sm_capacity)) {
    l.error = std::string("kernel ") + k.name + ": a block needs " + resources_text(g->need) + ", more than an SM has (" +
              resources_text(d.sm_capacity) + ")";
    return 1;
  }
  g->profile_at = profile_launch(k.name, grid, block, smem);     // (the profile's rows in launch order)
  StreamOp op;
  op.grid = std::move(g);
  queue(stream, std::move(op));
  return 0;
}

inline void start_grid(Grid& g) {
  Launch& l = state();
  for (unsigned z = 0; z < g.dims.z; ++z)
    for (unsigned y = 0; y < g.dims.y; ++y)
      for (unsigned x = 0; x < g.dims.x; ++x) g.order.push_back({x, y, z});
  if (l.shuffled) std::shuffle(g.order.begin(), g.order.end(), l.order);
  g.started = true;
  device().running.push_back(&g);
}

// One step of stream s's head: whether it moved (its kernel started, or it is done).
inline bool step_stream(Stream& s) {
  Device& d = device();
  if (s.head == s.ops.size()) return false;
  StreamOp& op = s.ops[s.head];
  bool done;
  if (op.grid) {
    if (!op.grid->started) {
      start_grid(*op.grid);
      return true;
    }
    done = op.grid->done();
    if (done) {
      d.running.erase(std::find(d.running.begin(), d.running.end(), op.grid.get()));
      op.grid->spare.clear();       // (its blocks' stacks and buffers go back now, not at the call's end)
    }
  } else if (op.after_stream >= 0) {
    done = d.streams[op.after_stream].head >= op.after;
  } else {
    done = op.host.run();
  }
  if (done) ++s.head;
  return done;
}

// Run the heads of the streams as far as they go, one step at a time, the head the host
// queued first first (so kernels start in the order they were launched); whether any moved.
inline bool advance_streams() {
  Device& d = device();
  for (bool moved = false;; moved = true) {
    const Stream& main = d.streams[0];
    const Stream& side = d.streams[1];
    const int first = main.head < main.ops.size() && side.head < side.ops.size() &&
                      side.ops[side.head].seq < main.ops[main.head].seq;
    if (!step_stream(d.streams[first]) && !step_stream(d.streams[1 - first])) return moved;
  }
}

// Swap the running block's state (in the Launch and the other headers) with block b's.
inline void swap_block(Block& b) {
  Launch& l = state();
  std::swap(l.block_idx, b.block_idx);
  std::swap(l.fibers, b.fibers);
  std::swap(l.warps, b.warps);
  std::swap(l.warpgroups, b.warpgroups);
  std::swap(l.epoch, b.epoch);
  std::swap(l.dynamic_storage, b.dynamic_storage);
  std::swap(l.dynamic_shared, b.dynamic_shared);
  b.parked.resize(l.block_swap.size());
  for (size_t i = 0; i < l.block_swap.size(); ++i) l.block_swap[i](b.parked[i]);
}
// The static arrays' bytes out of (save) or into the section.
inline void move_shared(std::vector<unsigned char>& copy, bool save) {
  const size_t all = section_bytes();
  if (!all) return;
  if (save) copy.resize(all);
  Memory& m = memory();
  if (!m.arrays_known) {
    save ? std::memcpy(copy.data(), __start_ditron_emu_shared, all) : std::memcpy(__start_ditron_emu_shared, copy.data(), all);
    return;
  }
  for (const SharedArray& a : m.arrays)
    save ? std::memcpy(copy.data() + a.at, __start_ditron_emu_shared + a.at, a.bytes)
         : std::memcpy(__start_ditron_emu_shared + a.at, copy.data() + a.at, a.bytes);
}

// Make b the running block: park the running one, give the Launch b's kernel and state.
inline void activate(Block* b) {
  Device& d = device();
  if (d.active == b) return;
  if (d.active) {
    swap_block(*d.active);
    move_shared(d.active->shared_copy, true);
  }
  Launch& l = state();
  const Grid& g = *b->grid;
  l.body = g.kernel->body;
  l.params = g.params;
  l.grid = g.dims;
  l.block = g.block;
  l.dynamic_bytes = g.smem;
  l.profile_at = g.profile_at;
  swap_block(*b);
  d.active = b;
  if (b->started) {
    move_shared(b->shared_copy, false);
  } else {
    b->started = true;
    begin_block();
  }
}

// The next block of grid g, on SM sm.
inline Block* new_block(Grid& g, size_t sm) {
  Device& d = device();
  std::unique_ptr<Block> b;
  if (!g.spare.empty()) {
    b = std::move(g.spare.back());
    g.spare.pop_back();
  } else {
    b.reset(new Block);
    b->fibers.resize(g.threads);
    b->dynamic_storage.reset(new unsigned char[GUARD_BYTES + g.smem + SHARED_ALIGN + GUARD_BYTES]);
    b->dynamic_shared = reinterpret_cast<unsigned char*>(
        (reinterpret_cast<uintptr_t>(b->dynamic_storage.get()) + GUARD_BYTES + SHARED_ALIGN - 1) &
        ~uintptr_t(SHARED_ALIGN - 1));
    for (unsigned i = 0; i < g.threads; ++i) {
      Fiber& f = b->fibers[i];
      f.linear = static_cast<int>(i);
      f.tid = {i % g.block.x, (i / g.block.x) % g.block.y, i / (g.block.x * g.block.y)};
    }
  }
  b->grid = &g;
  b->sm = sm;
  b->block_idx = g.order[g.next++];
  b->warps.assign((g.threads + 31) / 32, WarpMeeting{});
  b->warpgroups.assign((g.threads + 127) / 128, WarpMeeting{});
  for (WarpMeeting& m : b->warpgroups) m.size = 128;
  b->epoch = 0;
  b->started = b->stalled = false;
  take(d.sms[sm], g.need);
  ++g.resident;
  d.resident.push_back(std::move(b));
  return d.resident.back().get();
}

// A block to start: of the first started kernel (or, shuffled, a drawn one) whose next
// block has room on some SM; nullptr when none has.
inline Block* start_block() {
  Device& d = device();
  Launch& l = state();
  std::vector<std::pair<Grid*, size_t>> can;
  for (Grid* g : d.running) {
    if (g->next == g->order.size()) continue;
    for (size_t i = 0; i < d.sms.size(); ++i) {
      const size_t sm = (d.cursor + i) % d.sms.size();
      if (fits(d.sms[sm], g->need, d.sm_capacity)) {
        can.emplace_back(g, sm);
        break;
      }
    }
    if (!can.empty() && !l.shuffled) break;
  }
  if (can.empty()) return nullptr;
  const auto& pick = can[l.shuffled ? l.order() % can.size() : 0];
  d.cursor = (pick.second + 1) % d.sms.size();
  return new_block(*pick.first, pick.second);
}

inline void finish_block(Block* b) {
  Device& d = device();
  swap_block(*b);                                // (its fibers and buffers go back to it, for reuse)
  d.active = nullptr;
  Grid& g = *b->grid;
  give_back(d.sms[b->sm], g.need);
  --g.resident;
  for (size_t i = 0; i < d.resident.size(); ++i)
    if (d.resident[i].get() == b) {
      g.spare.push_back(std::move(d.resident[i]));
      d.resident.erase(d.resident.begin() + static_cast<long>(i));
      break;
    }
}

inline const std::vector<Fiber>& fibers_of(const Block& b) {
  return &b == device().active ? state().fibers : b.fibers;
}

// A parked (or the running, stalled) block whose external wait now holds, or a fresh one.
inline Block* resumable() {
  for (auto& r : device().resident) {
    if (!r->stalled) return r.get();
    for (const Fiber& f : fibers_of(*r))
      if (f.state == Fiber::WAITING && f.external && f.can_go()) return r.get();
  }
  return nullptr;
}

// What every resident block and every stream waits for (the first few blocks), for messages.
// (A parked block's waits are described with its own state swapped in: an mbarrier wait
// reads the block's barriers.)
inline std::string waits_text() {
  Device& d = device();
  std::string out;
  int shown = 0, more = 0;
  Block* const active = d.active;
  for (auto& r : d.resident) {
    Block* b = r.get();
    if (b != active) {
      if (active) swap_block(*active);
      swap_block(*b);
    }
    const Launch& l = state();
    for (const Fiber& f : l.fibers) {
      if (f.state != Fiber::WAITING) continue;
      if (shown == 6) { ++more; break; }
      out += (out.empty() ? "" : "; ") + (d.running.size() > 1 ? "kernel " + std::string(b->grid->kernel->name) + ": " : "") +
             thread_name(f, l.block_idx) + " waits for " + f.waits_for();
      ++shown;
      break;                                   // (one thread per block)
    }
    if (b != active) {
      swap_block(*b);
      if (active) swap_block(*active);
    }
  }
  if (more) out += "; and the threads of " + std::to_string(more) + " more blocks";
  for (int s = 0; s < 2; ++s) {
    const Stream& st = d.streams[s];
    if (st.head == st.ops.size()) continue;
    const StreamOp& op = st.ops[st.head];
    if (op.grid) continue;
    out += (out.empty() ? "" : "; ") + std::string(stream_name(s)) + " waits " +
           (op.after_stream >= 0 ? std::string("for ") + stream_name(op.after_stream) : "in " + op.host.waits_for());
  }
  return out;
}

// Where the running kernels' blocks are: resident, and waiting for room on an SM.
inline std::string residency_text() {
  Device& d = device();
  std::string out;
  for (const Grid* g : d.running)
    out += (out.empty() ? "" : "; ") + std::string("kernel ") + g->kernel->name + " (" + stream_name(g->stream) +
           "): " + std::to_string(g->resident) + " blocks resident, " + std::to_string(g->order.size() - g->next) +
           " waiting for room on an SM (a block needs " + resources_text(g->need) + ")";
  return out + "; " + std::to_string(d.sms.size()) + (d.sms.size() == 1 ? " SM" : " SMs") +
         (d.sms_chosen ? " (DITRON_EMULATE_SMS)" : "") + " of " + resources_text(d.sm_capacity) + " and " +
         std::to_string(d.sm_capacity.blocks) + " blocks each";
}

// Run the queued work until every stream is empty (0), or an error (1, the error in
// state().error, device().failed_launch the launch it belongs to, or -1).
inline int run_device() {
  Device& d = device();
  Launch& l = state();
  l.error.clear();
  d.failed_launch = -1;
  const char* seed = std::getenv("DITRON_EMULATE_SEED");
  l.shuffled = seed && *seed;
  if (l.shuffled) {
    char* end = nullptr;
    const unsigned long long n = std::strtoull(seed, &end, 10);
    if (*end != '\0') {
      d.clear();
      l.error = std::string("DITRON_EMULATE_SEED=") + seed + ": expected a non-negative integer (or unset it)";
      return 1;
    }
    l.order.seed(n);
  }
  FaultScope faults;
  bool waiting = false;                          // nothing could run, since:
  std::chrono::steady_clock::time_point since;
  auto stop = [&](const Grid* g, const std::string& why) {
    if (d.active) swap_block(*d.active);         // (its state back into its Block)
    d.active = nullptr;
    d.failed_launch = g ? g->id : -1;
    l.error = (g ? std::string("kernel ") + g->kernel->name + ": " : std::string()) + why;
    d.clear();
    return 1;
  };
  for (;;) {
    try {
      if (advance_streams()) waiting = false;    // (each wait has its own timeout)
    } catch (const Failure& e) {                 // (a host operation's error)
      return stop(nullptr, e.what);
    }
    bool empty = true;
    for (const Stream& s : d.streams) empty = empty && s.head == s.ops.size();
    if (empty) break;
    Block* b = resumable();
    if (!b) b = start_block();
    if (!b) {
      bool queued = false;
      for (const Grid* g : d.running) queued = queued || g->next < g->order.size();
      // (the error is that kernel's when it is the only one running and no stream waits
      // on a host operation or the other stream)
      const Grid* only = d.running.size() == 1 ? d.running[0] : nullptr;
      for (const Stream& st : d.streams)
        if (st.head < st.ops.size() && !st.ops[st.head].grid) only = nullptr;
      if (!external_check || !other_writers || other_writers() == 0) {   // nobody else can set it
        if (queued)
          return stop(only, "residency deadlock: every resident block waits, for what only a block that has not "
                      "started could do: " + waits_text() + " (" + residency_text() + "; a kernel that waits for "
                      "other blocks needs them resident: fewer blocks, smaller ones, or more SMs)");
        return stop(only, std::string(d.resident.empty() ? "deadlock: the streams wait, for what nothing will do: "
                                                        : "deadlock: every block waits, for what no block will do: ") +
                              waits_text());
      }
      if (!waiting) {
        waiting = true;
        since = std::chrono::steady_clock::now();
      }
      const std::string verdict = external_check(since, [queued] {
        return waits_text() + (queued ? " (" + residency_text() + ")" : "");
      });
      if (!verdict.empty()) return stop(only, verdict);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      continue;
    }
    waiting = false;
    b->stalled = false;
    BlockRun r;
    try {
      activate(b);
      r = run_block();
    } catch (const Failure& e) {           // (outside a fiber: the scheduler checking a wait)
      l.error = block_name(l.block_idx) + ": " + e.what;
      r = BLOCK_FAILED;
    }
    if (r == BLOCK_FAILED) return stop(b->grid, l.error);
    if (r == BLOCK_STALLED) {
      b->stalled = true;
      continue;
    }
    finish_block(b);
  }
  d.clear();
  return 0;
}

// run_device, with what the C++ library throws (std::bad_alloc: a launch too large for this
// machine's memory) as an error rather than across the loader's C entry point.
inline int sync() {
  try {
    return run_device();
  } catch (const std::exception& e) {
    Device& d = device();
    if (d.active) swap_block(*d.active);
    d.active = nullptr;
    d.failed_launch = -1;
    d.clear();
    state().error = std::string("the emulator failed: ") + e.what() +
                    " (out of this machine's memory, most likely: emulate a smaller shape)";
    return 1;
  }
}

// ---- the shared-memory sanitizer: per byte, who wrote it and who read it since the last
// barrier, and whether an asynchronous copy into it has landed. Kernel code reports its
// accesses through the compiler's thread-sanitizer hooks (below: the emulator compiles
// kernels with -fsanitize=thread and supplies the hooks itself); the instructions the
// emulator runs itself (ldmatrix, wgmma, TMA) check their bytes explicitly.
constexpr unsigned char PENDING_CP_ASYNC = 1, PENDING_TMA = 2;
struct ByteState {
  int writer = -1;          // thread (linear id) of the last write, -1: none
  unsigned write_epoch = 0;
  int reader = -1;          // -1: none since the last barrier, -2: several threads
  unsigned read_epoch = 0;
  unsigned char pending = 0;
  bool written = false;     // by some thread since the block started
};
struct Shadow {
  std::vector<ByteState> bytes;     // over the shared window (dynamic, then static)
  size_t dynamic_window = 0;
};
inline Shadow shadow_storage;
inline Shadow& shadow() { return shadow_storage; }

// The shared window offset of p, or -1 outside shared memory (and in the gaps between
// static arrays, which bounds_error reports).
inline int64_t window_offset(const void* p) {
  const Launch& l = state();
  const unsigned char* c = static_cast<const unsigned char*>(p);
  if (l.dynamic_bytes && c >= l.dynamic_shared && c < l.dynamic_shared + l.dynamic_bytes) return c - l.dynamic_shared;
  if (__start_ditron_emu_shared != nullptr && c >= __start_ditron_emu_shared && c < __stop_ditron_emu_shared) {
    const size_t at = size_t(c - __start_ditron_emu_shared);
    if (const SharedArray* a = array_at(at)) return int64_t(shadow().dynamic_window + a->window + (at - a->at));
  }
  return -1;
}

// The memory at shared window offset `off`, `bytes` long, or nullptr outside shared memory.
inline unsigned char* window_pointer(uint64_t off, size_t bytes) {
  const Launch& l = state();
  const size_t dyn = shadow().dynamic_window;
  if (off + bytes <= l.dynamic_bytes) return l.dynamic_shared + off;
  if (off < dyn) return nullptr;
  for (const SharedArray& a : memory().arrays)
    if (off - dyn >= a.window && off - dyn + bytes <= a.window + a.bytes)
      return __start_ditron_emu_shared + a.at + (off - dyn - a.window);
  return nullptr;
}

inline void reset_shadow() {
  const Launch& l = state();
  Shadow& s = shadow();
  s.dynamic_window = (l.dynamic_bytes + SHARED_ALIGN - 1) & ~(SHARED_ALIGN - 1);
  array_at(0);     // (the static layout, if the loader gave none)
  s.bytes.assign(s.dynamic_window + memory().static_window, ByteState{});
}

// Why an access of `n` bytes at p is out of bounds, or "" when it is not: bytes outside the
// static shared array or the dynamic shared memory it starts in, or in the guard zone of
// an argument. ({shared:static:N}, {shared:dynamic:N} and {global:K:N} (byte N of region
// K, signed) are named by the loader.)
inline std::string bounds_error(const void* p, size_t n) {
  const Launch& l = state();
  const unsigned char* c = static_cast<const unsigned char*>(p);
  const unsigned char* e = c + n;
  if (__start_ditron_emu_shared != nullptr && e > __start_ditron_emu_shared && c < __stop_ditron_emu_shared) {
    const size_t at = c >= __start_ditron_emu_shared ? size_t(c - __start_ditron_emu_shared) : 0;
    const SharedArray* a = array_at(at);
    if (a && c >= __start_ditron_emu_shared && size_t(e - __start_ditron_emu_shared) <= a->at + a->bytes) return "";
    return "{shared:static:" + std::to_string(a ? a->at + a->bytes : at) + "}";
  }
  if (l.dynamic_storage) {
    const unsigned char* lo = l.dynamic_shared - GUARD_BYTES;
    const unsigned char* hi = l.dynamic_shared + l.dynamic_bytes;
    if (c >= l.dynamic_shared && e <= hi) return "";
    if (e > lo && c < hi + GUARD_BYTES)
      return "{shared:dynamic:" + std::to_string(c < l.dynamic_shared ? c - l.dynamic_shared : std::max(c, hi) - l.dynamic_shared) + "}";
  }
  const std::vector<Region>& regions = memory().regions;
  for (const Region& r : regions)
    if (c >= r.begin && e <= r.begin + r.bytes) return "";
  for (size_t k = 0; k < regions.size(); ++k) {
    const Region& r = regions[k];
    if (e > r.begin - GUARD_BYTES && c < r.begin + r.bytes + GUARD_BYTES)
      return "{global:" + std::to_string(k) + ":" +
             std::to_string(c < r.begin ? c - r.begin : std::max(c, r.begin + r.bytes) - r.begin) + "}";
  }
  return "";
}

// Whether an access touches what the checks watch (shared memory with its gaps and guards,
// the arguments with theirs): most accesses in kernel code are not (its stack, the
// emulator's own state), and pass with these comparisons only.
inline bool watched(const void* p, size_t n) {
  const Launch& l = state();
  const unsigned char* c = static_cast<const unsigned char*>(p);
  const unsigned char* e = c + n;
  if (__start_ditron_emu_shared != nullptr && e > __start_ditron_emu_shared && c < __stop_ditron_emu_shared) return true;
  if (l.dynamic_storage && e > l.dynamic_shared - GUARD_BYTES && c < l.dynamic_shared + l.dynamic_bytes + GUARD_BYTES)
    return true;
  for (const Region& r : memory().regions)
    if (e > r.begin - GUARD_BYTES && c < r.begin + r.bytes + GUARD_BYTES) return true;
  return false;
}

// Fail if an access is out of bounds (what: the instruction).
inline void check_bounds(const void* p, size_t n, bool write, const char* what) {
  if (!watched(p, n)) return;
  const std::string where = bounds_error(p, n);
  if (!where.empty())
    fail(std::string("out-of-bounds access: ") + what + (write ? " writes " : " reads ") + std::to_string(n) +
         " bytes at " + where);
}
inline const bool shadow_registered = (state().block_start.push_back(&reset_shadow), true);
template <class T> void swap_parked(T& live, std::shared_ptr<void>& slot) {
  if (!slot) slot = std::make_shared<T>();
  std::swap(live, *static_cast<T*>(slot.get()));
}
inline const bool shadow_parks = (state().block_swap.push_back([](std::shared_ptr<void>& s) {
  swap_parked(shadow(), s);
}), true);

inline void mark_pending(const void* p, size_t n, unsigned char how) {
  const int64_t off = window_offset(p);
  if (off < 0) return;
  ByteState* b = shadow().bytes.data() + off;
  for (size_t i = 0; i < n && size_t(off) + i < shadow().bytes.size(); ++i) {
    b[i].pending = how;
    if (!how) b[i].written = true;      // landed
  }
}

inline std::string where_shared(int64_t off) {
  // {shared:dynamic:N} / {shared:static:N} become the array and byte in the loader's message
  // (ditron/build/emulate.py)
  const size_t dyn = shadow().dynamic_window;
  if (size_t(off) < dyn) return "{shared:dynamic:" + std::to_string(off) + "}";
  const size_t w = size_t(off) - dyn;
  for (const SharedArray& a : memory().arrays)
    if (w >= a.window && w < a.window + a.bytes) return "{shared:static:" + std::to_string(a.at + (w - a.window)) + "}";
  return "{shared:static:?}";
}

// An operand read by the asynchronous proxy (wgmma): landed and written, no thread's access.
inline void check_async_read(const void* p, size_t n, const char* what) {
  const int64_t off = window_offset(p);
  if (off < 0) return;
  for (size_t i = 0; i < n && size_t(off) + i < shadow().bytes.size(); ++i) {
    const ByteState& b = shadow().bytes[off + i];
    if (b.pending)
      fail(std::string(what) + " reads " + where_shared(off + i) + ", which a " +
           (b.pending == PENDING_TMA ? "TMA copy" : "cp.async copy") + " has not landed yet");
    if (!b.written) fail(std::string(what) + " reads " + where_shared(off + i) + ", which nothing has written");
  }
}

inline std::string who(int linear) {
  const Launch& l = state();
  if (linear < 0 || linear >= static_cast<int>(l.fibers.size())) return "a thread";
  const Fiber& f = l.fibers[linear];
  return "thread (" + std::to_string(f.tid.x) + ", " + std::to_string(f.tid.y) + ", " + std::to_string(f.tid.z) + ")";
}

// One access of `n` bytes at p by thread `linear` (what: the instruction, for messages).
inline void check_access_at(int64_t off, size_t n, bool write, int linear, const char* what);
inline void check_access(const void* p, size_t n, bool write, int linear, const char* what) {
  const int64_t off = window_offset(p);
  if (off >= 0) check_access_at(off, n, write, linear, what);
}
// The same, at shared window offset `off`.
inline void check_access_at(int64_t off, size_t n, bool write, int linear, const char* what) {
  Shadow& s = shadow();
  const unsigned epoch = state().epoch;
  for (size_t i = 0; i < n; ++i) {
    if (size_t(off) + i >= s.bytes.size()) break;
    ByteState& b = s.bytes[off + i];
    if (b.pending)
      fail(std::string(what) + (write ? " writes " : " reads ") + where_shared(off + i) + ", which " +
           (b.pending == PENDING_TMA ? "a TMA copy (cp.async.bulk.tensor)" : "a cp.async copy") +
           " has not landed yet (" + (b.pending == PENDING_TMA ? "wait on its mbarrier first" :
                                      "cp.async.wait_group must wait for its group first") + ")");
    // (a read of bytes nothing wrote is not an error by itself: tiles read padding whose
    // results are discarded; the NaN poison carries such values into the output instead)
    if (b.writer >= 0 && b.writer != linear && b.write_epoch == epoch)
      fail(std::string("shared-memory race: ") + what + (write ? " writes " : " reads ") + where_shared(off + i) +
           ", which " + who(b.writer) + " wrote with no barrier between them");
    if (write && b.read_epoch == epoch && b.reader != -1 && b.reader != linear)
      fail(std::string("shared-memory race: ") + what + " writes " + where_shared(off + i) + ", which " +
           (b.reader == -2 ? std::string("other threads") : who(b.reader)) + " read with no barrier between them");
    if (write) {
      b.writer = linear;
      b.write_epoch = epoch;
      b.written = true;
    } else if (b.read_epoch != epoch || b.reader == -1) {
      b.reader = linear;
      b.read_epoch = epoch;
    } else if (b.reader != linear) {
      b.reader = -2;
    }
  }
}

// ---- the profiler (on with the sanitizer's hooks; mod.profile(), ditron/build/emulate.py).
// A warp's memory request is one instruction (its place in the code) run by the lanes of
// a warp for the same time since the block's last barrier; the requests of an epoch are
// counted when the block passes its next barrier. Shared memory: a request is served in
// phases of 128 bytes (32 lanes of 4-byte accesses, 16 of 8, 8 of 16); a phase takes as
// many wavefronts as the most distinct 4-byte words any one of the 32 banks holds, and
// bank conflicts are the wavefronts above one per phase (Nsight Compute's extra
// wavefronts). Global memory: the 32-byte sectors a request touches. Per block: the bytes
// of global memory it moves (loads, stores, cp.async, TMA) and the floating-point
// operations of its tensor-core instructions (the emulator does not see SIMT arithmetic).
struct MemAccess { const void* pc; uint64_t addr; uint32_t bytes; bool shared; };
struct BlockWork { unsigned x, y, z; uint64_t bytes = 0, flops = 0; };
struct KernelProfile {
  std::string kernel;
  unsigned grid[3] = {1, 1, 1}, block[3] = {1, 1, 1};
  size_t dynamic_bytes = 0;
  uint64_t shared_requests = 0, shared_wavefronts = 0, shared_ideal = 0, global_requests = 0, global_sectors = 0;
  std::vector<BlockWork> blocks;
};
struct Profiler {
  bool on = false;
  std::vector<std::vector<MemAccess>> lanes;   // per thread of the running block, since the last barrier
  size_t work = 0;                             // the running block's entry in its kernel's blocks
  std::vector<KernelProfile> launches;         // of the current call
  std::string json;
};
inline Profiler profiler_storage;
inline Profiler& profiler() { return profiler_storage; }
struct ProfiledBlock { std::vector<std::vector<MemAccess>> lanes; size_t work = 0; };
inline const bool profiler_parks = (state().block_swap.push_back([](std::shared_ptr<void>& s) {
  if (!s) s = std::make_shared<ProfiledBlock>();
  ProfiledBlock& b = *static_cast<ProfiledBlock*>(s.get());
  std::swap(profiler().lanes, b.lanes);
  std::swap(profiler().work, b.work);
}), true);
inline bool in_region(const void* p) {
  const unsigned char* c = static_cast<const unsigned char*>(p);
  for (const Region& r : memory().regions)
    if (c >= r.begin && c < r.begin + r.bytes) return true;
  return false;
}
// An access of thread `linear` (of its stack: not counted); off: p's shared window offset.
inline void profile_access_at(int linear, const void* pc, const void* p, int64_t off, size_t n) {
  Profiler& pr = profiler();
  if (off >= 0) {
    pr.lanes[linear].push_back({pc, uint64_t(off), uint32_t(n), true});
  } else if (in_region(p)) {
    pr.lanes[linear].push_back({pc, reinterpret_cast<uint64_t>(p), uint32_t(n), false});
    pr.launches[state().profile_at].blocks[pr.work].bytes += n;
  }
}
inline void profile_access(int linear, const void* pc, const void* p, size_t n) {
  profile_access_at(linear, pc, p, window_offset(p), n);
}
inline void profile_bytes(uint64_t n) {
  if (profiler().on) profiler().launches[state().profile_at].blocks[profiler().work].bytes += n;
}
inline void profile_flops(uint64_t n) {
  if (profiler().on) profiler().launches[state().profile_at].blocks[profiler().work].flops += n;
}
struct LaneAccess { int lane; uint64_t addr; uint32_t bytes; };
inline void count_shared(KernelProfile& k, const std::vector<LaneAccess>& req) {
  uint32_t size = 1;
  for (const LaneAccess& a : req) size = std::max(size, a.bytes);
  const int per_phase = size >= 4 ? std::max<int>(1, 128 / int(size)) : 32;
  std::vector<uint64_t> words;
  for (int first = 0; first < 32; first += per_phase) {
    words.clear();
    for (const LaneAccess& a : req)
      if (a.lane >= first && a.lane < first + per_phase)
        for (uint64_t w = a.addr / 4; w <= (a.addr + a.bytes - 1) / 4; ++w) words.push_back(w);
    if (words.empty()) continue;
    std::sort(words.begin(), words.end());
    words.erase(std::unique(words.begin(), words.end()), words.end());
    unsigned per_bank[32] = {};
    unsigned most = 0;
    for (uint64_t w : words) most = std::max(most, ++per_bank[w % 32]);
    k.shared_wavefronts += most;
    k.shared_ideal += 1;
  }
  k.shared_requests += 1;
}
inline void count_global(KernelProfile& k, const std::vector<LaneAccess>& req) {
  std::vector<uint64_t> sectors;
  for (const LaneAccess& a : req)
    for (uint64_t s = a.addr / 32; s <= (a.addr + a.bytes - 1) / 32; ++s) sectors.push_back(s);
  std::sort(sectors.begin(), sectors.end());
  k.global_sectors += uint64_t(std::unique(sectors.begin(), sectors.end()) - sectors.begin());
  k.global_requests += 1;
}
// The requests of the epoch that ends (a barrier, the block's end).
inline void profile_epoch() {
  Profiler& pr = profiler();
  if (!pr.on) return;
  KernelProfile& k = pr.launches[state().profile_at];
  const int n = static_cast<int>(pr.lanes.size());
  std::vector<LaneAccess> req;
  for (int w0 = 0; w0 < n; w0 += 32) {
    const int lanes = std::min(32, n - w0);
    // Converged lanes (the common case) made the same accesses in the same order: the i-th
    // access of each is one request.
    const std::vector<MemAccess>* first = nullptr;
    bool converged = true;
    for (int lane = 0; lane < lanes && converged; ++lane) {
      const std::vector<MemAccess>& v = pr.lanes[w0 + lane];
      if (v.empty()) continue;
      if (!first) first = &v;
      else if (v.size() != first->size()) converged = false;
      else
        for (size_t i = 0; i < v.size(); ++i)
          if (v[i].pc != (*first)[i].pc) { converged = false; break; }
    }
    if (!first) continue;
    if (converged) {
      for (size_t i = 0; i < first->size(); ++i) {
        req.clear();
        for (int lane = 0; lane < lanes; ++lane) {
          const std::vector<MemAccess>& v = pr.lanes[w0 + lane];
          if (!v.empty()) req.push_back({lane, v[i].addr, v[i].bytes});
        }
        ((*first)[i].shared ? count_shared : count_global)(k, req);
      }
      for (int lane = 0; lane < lanes; ++lane) pr.lanes[w0 + lane].clear();
      continue;
    }
    // Diverged lanes: (pc, occurrence) -> the request's lanes, in the order first met
    std::vector<std::pair<bool, std::vector<LaneAccess>>> requests;
    std::map<std::pair<const void*, uint32_t>, size_t> index;
    for (int lane = 0; lane < lanes; ++lane) {
      std::map<const void*, uint32_t> seen;
      for (const MemAccess& a : pr.lanes[w0 + lane]) {
        const auto key = std::make_pair(a.pc, seen[a.pc]++);
        auto it = index.find(key);
        if (it == index.end()) {
          it = index.emplace(key, requests.size()).first;
          requests.emplace_back(a.shared, std::vector<LaneAccess>{});
        }
        requests[it->second].second.push_back({lane, a.addr, a.bytes});
      }
      pr.lanes[w0 + lane].clear();
    }
    for (const auto& r : requests) (r.first ? count_shared : count_global)(k, r.second);
  }
}
inline void profile_block_start(int threads) {
  Profiler& pr = profiler();
  if (!pr.on) return;
  const Launch& l = state();
  pr.lanes.assign(threads, {});
  std::vector<BlockWork>& blocks = pr.launches[l.profile_at].blocks;
  pr.work = blocks.size();
  blocks.push_back({l.block_idx.x, l.block_idx.y, l.block_idx.z});
}
// A kernel starts: its entry in the call's launches (0 when the profiler is off).
inline size_t profile_launch(const char* kernel, const unsigned* grid, const unsigned* block, size_t smem) {
  Profiler& pr = profiler();
  if (!pr.on) return 0;
  KernelProfile k;
  k.kernel = kernel;
  for (int i = 0; i < 3; ++i) k.grid[i] = grid[i], k.block[i] = block[i];
  k.dynamic_bytes = smem;
  pr.launches.push_back(std::move(k));
  return pr.launches.size() - 1;
}
inline const char* profile_json() {
  std::string& out = profiler().json;
  out = "[";
  for (const KernelProfile& k : profiler().launches) {
    if (out.size() > 1) out += ",";
    out += "{\"kernel\":\"" + k.kernel + "\",\"grid\":[" + std::to_string(k.grid[0]) + "," + std::to_string(k.grid[1]) +
           "," + std::to_string(k.grid[2]) + "],\"block\":[" + std::to_string(k.block[0]) + "," +
           std::to_string(k.block[1]) + "," + std::to_string(k.block[2]) + "],\"dynamic_shared_bytes\":" +
           std::to_string(k.dynamic_bytes) + ",\"shared_requests\":" + std::to_string(k.shared_requests) +
           ",\"shared_wavefronts\":" + std::to_string(k.shared_wavefronts) + ",\"shared_ideal_wavefronts\":" +
           std::to_string(k.shared_ideal) + ",\"global_requests\":" + std::to_string(k.global_requests) +
           ",\"global_sectors\":" + std::to_string(k.global_sectors) + ",\"blocks\":[";
    for (size_t b = 0; b < k.blocks.size(); ++b) {
      const BlockWork& w = k.blocks[b];
      out += (b ? ",[" : "[") + std::to_string(w.x) + "," + std::to_string(w.y) + "," + std::to_string(w.z) + "," +
             std::to_string(w.bytes) + "," + std::to_string(w.flops) + "]";
    }
    out += "]}";
  }
  out += "]";
  return out.c_str();
}

// What kernels call directly is not inlined, so that its return address is the call's
// place in the kernel (for the source line of an error).
#define DITRON_EMU_API __attribute__((noinline))
struct Here {         // the call's place in the kernel while the instruction runs
  explicit Here(void* pc) { state().last_pc = pc; }
  ~Here() { state().last_pc = nullptr; }
};
#define DITRON_EMU_HERE() ::ditron::emu::Here ditron_emu_here(__builtin_return_address(0))

// ---- what kernels call
// The block's barrier, reached by `what` (__syncthreads, or a block-wide call built on it).
inline void block_barrier(const char* what) {
  Fiber& f = self();
  f.state = Fiber::AT_BARRIER;
  f.barrier_what = what;
  ++f.barriers;
  yield_to_scheduler();
}
inline void syncthreads() { block_barrier("__syncthreads"); }

inline unsigned char* dynamic_shared(size_t align) {
  if (align > SHARED_ALIGN) fail("dynamic shared memory aligned to " + std::to_string(align) + " bytes");
  return state().dynamic_shared;
}

// The emulator's own accesses of shared memory (landing copies) are not the kernel's.
struct RuntimeScope {
  RuntimeScope() { ++state().in_runtime; }
  ~RuntimeScope() { --state().in_runtime; }
};

inline void async_copy(void* dst, const void* src, size_t bytes) {
  Fiber& f = self();
  check_bounds(src, bytes, false, "cp.async");
  check_bounds(dst, bytes, true, "cp.async");
  if (window_offset(dst) < 0) fail("cp.async: its destination is not in shared memory");
  if (profiler().on) {
    profile_access(f.linear, state().last_pc, src, bytes);
    profile_access(f.linear, state().last_pc, dst, bytes);
  }
  Fiber::Copy c{dst, std::vector<unsigned char>(bytes)};
  std::memcpy(c.data.data(), src, bytes);        // the source is read when issued
  check_access(dst, bytes, true, f.linear, "cp.async");   // written by this thread, visible once landed
  std::memset(dst, POISON, bytes);               // the destination is undefined until it lands
  mark_pending(dst, bytes, PENDING_CP_ASYNC);
  f.groups.back().push_back(std::move(c));
}

inline void async_commit() { self().groups.emplace_back(); }

// cp.async.wait_group n: every committed group but the newest n has landed.
inline void async_wait(int pending) {
  Fiber& f = self();
  const int committed = static_cast<int>(f.groups.size()) - 1;
  RuntimeScope scope;
  for (int g = 0; g < committed - pending; ++g) {
    for (Fiber::Copy& c : f.groups[g]) {
      std::memcpy(c.dst, c.data.data(), c.data.size());
      mark_pending(c.dst, c.data.size(), 0);
    }
  }
  if (committed > pending) f.groups.erase(f.groups.begin(), f.groups.begin() + (committed - pending));
}

// An instruction of a whole warp (``size`` 32) or warpgroup (128): every one of its threads
// that exists must reach it; the last to arrive runs it for all, with each thread's `arg`.
inline void group_collective(int size, const char* what, Collective run, void* arg) {
  Launch& l = state();
  Fiber& f = self();
  const int g = f.linear / size, lane = f.linear % size;
  const int lanes = std::min<int>(size, static_cast<int>(l.fibers.size()) - g * size);
  WarpMeeting& m = (size == 32 ? l.warps : l.warpgroups)[g];
  if (m.arrived == 0) {
    m.run = run;
    m.what = what;
  } else if (m.run != run) {
    fail(std::string(size == 32 ? "the lanes of warp " : "the threads of warpgroup ") + std::to_string(g) +
         " meet at different instructions: " + m.what + " and " + what);
  }
  m.args[lane] = arg;
  if (++m.arrived < lanes) {
    f.state = Fiber::AT_WARP;
    yield_to_scheduler();
    return;
  }
  m.arrived = 0;
  ++l.in_runtime;            // (the instruction checks the bytes it touches itself)
  m.run(m.args, lanes);
  --l.in_runtime;
  for (int i = 0; i < lanes; ++i) {
    Fiber& o = l.fibers[g * size + i];
    if (o.state == Fiber::AT_WARP) o.state = Fiber::READY;
  }
}

inline void warp_collective(const char* what, Collective run, void* arg) { group_collective(32, what, run, arg); }

// Block until ``can_go()``; ``waits_for()`` describes the wait if the block deadlocks.
// ``external``: on memory that other blocks, ranks or the host change (an NVSHMEM signal:
// the block is parked when it stalls, and the scheduler polls it); else on the block's own
// state (an mbarrier phase).
inline void wait_until(std::function<bool()> can_go, std::function<std::string()> waits_for,
                       bool external = false) {
  if (can_go()) return;
  Fiber& f = self();
  f.can_go = std::move(can_go);
  f.waits_for = std::move(waits_for);
  f.external = external;
  f.state = Fiber::WAITING;
  yield_to_scheduler();
}

inline bool in_shared(const void* p, size_t bytes) {
  return window_offset(p) >= 0 && bounds_error(p, bytes).empty();
}

// ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16 (PTX ISA, "Warp-level matrix load
// instruction: ldmatrix"): lane 8 * i + r gives the address of row r of matrix i (8 16-bit
// elements, 16-byte aligned, in shared memory); register i of lane 4 * r + w holds elements
// 2w, 2w + 1 of row r of matrix i, or, transposed, column r of rows 2w and 2w + 1.
struct LdmatrixArg { uint32_t* r; const void* p; };
template <int N, bool TRANS> void ldmatrix_all(void* const* args, int lanes) {
  const char* what = TRANS ? "ldmatrix .trans" : "ldmatrix";
  if (lanes < 32) fail(std::string(what) + " in a warp of " + std::to_string(lanes) + " threads (it needs 32)");
  const uint16_t* rows[32];
  for (int i = 0; i < 8 * N; ++i) {
    const void* p = static_cast<const LdmatrixArg*>(args[i])->p;
    if (!in_shared(p, 16)) fail(std::string(what) + ": lane " + std::to_string(i) + " gives an address outside shared memory");
    if (reinterpret_cast<uintptr_t>(p) % 16) fail(std::string(what) + ": lane " + std::to_string(i) + " gives an address that is not 16-byte aligned");
    rows[i] = static_cast<const uint16_t*>(p);
    const int linear = (self().linear / 32) * 32 + i;
    check_access(p, 16, false, linear, what);
    if (profiler().on) profile_access(linear, state().last_pc, p, 16);
  }
  for (int lane = 0; lane < 32; ++lane) {
    uint32_t* r = static_cast<const LdmatrixArg*>(args[lane])->r;
    const int row = lane / 4, w = lane % 4;
    for (int i = 0; i < N; ++i) {
      const uint16_t* const* m = rows + 8 * i;
      const uint32_t lo = TRANS ? m[2 * w][row] : m[row][2 * w];
      const uint32_t hi = TRANS ? m[2 * w + 1][row] : m[row][2 * w + 1];
      r[i] = lo | (hi << 16);
    }
  }
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 (PTX ISA, "Matrix
// fragments for mma.m16n8k16"), with g = lane / 4, t = lane % 4: A (16 x 16) a0 = rows g,
// cols 2t..2t+1; a1 = rows g + 8; a2 = cols + 8; a3 = both; B (16 x 8) b0 = rows 2t..2t+1,
// col g; b1 = rows + 8; C / D (16 x 8) c0, c1 = row g, cols 2t, 2t + 1; c2, c3 = row g + 8.
struct MmaArg { float* d; const uint32_t* a; const uint32_t* b; };
template <class T> float half_of(uint32_t reg, int hi) {
  T v;
  const uint16_t bits = static_cast<uint16_t>(hi ? reg >> 16 : reg & 0xffffu);
  std::memcpy(&v, &bits, 2);
  return static_cast<float>(v);
}
template <class T> void mma_all(void* const* args, int lanes) {
  if (lanes < 32) fail("mma.sync in a warp of " + std::to_string(lanes) + " threads (it needs 32)");
  profile_flops(2 * 16 * 8 * 16);
  float A[16][16], B[16][8], C[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const MmaArg& x = *static_cast<const MmaArg*>(args[lane]);
    const int g = lane / 4, t = lane % 4;
    for (int h = 0; h < 2; ++h) {
      A[g][2 * t + h] = half_of<T>(x.a[0], h);
      A[g + 8][2 * t + h] = half_of<T>(x.a[1], h);
      A[g][2 * t + 8 + h] = half_of<T>(x.a[2], h);
      A[g + 8][2 * t + 8 + h] = half_of<T>(x.a[3], h);
      B[2 * t + h][g] = half_of<T>(x.b[0], h);
      B[2 * t + 8 + h][g] = half_of<T>(x.b[1], h);
      C[g][2 * t + h] = x.d[h];
      C[g + 8][2 * t + h] = x.d[2 + h];
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    const MmaArg& x = *static_cast<const MmaArg*>(args[lane]);
    const int g = lane / 4, t = lane % 4;
    for (int e = 0; e < 4; ++e) {
      const int row = g + 8 * (e / 2), col = 2 * t + e % 2;
      float acc = C[row][col];
      for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
      x.d[e] = acc;
    }
  }
}

}  // namespace emu

inline float to_float(half h) { return static_cast<float>(h); }
inline float to_float(bfloat16 h) { return static_cast<float>(h); }

}  // namespace ditron

#define threadIdx (::ditron::emu::self().tid)
#define blockIdx (::ditron::emu::state().block_idx)
#define blockDim (::ditron::emu::state().block)
#define gridDim (::ditron::emu::state().grid)
__attribute__((noinline)) inline void __syncthreads() {
  ::ditron::emu::syncthreads();
}
inline int atomicExch(int* p, int v) { const int old = *p; *p = v; return old; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }

#include "ditron/gpu_common.h"

// Dynamic shared memory is the launch's buffer, poisoned like the static arrays.
#undef DITRON_DYNAMIC_SHARED
#define DITRON_DYNAMIC_SHARED(align, name) unsigned char* name = ::ditron::emu::dynamic_shared(align)

namespace ditron {

// DITRON_EMU_ARCH: the build's arch number (80 for sm_80); below sm_80 these are plain
// copies, as in ditron/cuda.h.
#ifndef DITRON_EMU_ARCH
#error "compile the emulated GPU with -DDITRON_EMU_ARCH=<sm number>"
#endif
DITRON_EMU_API inline void cp_async4(void* smem, const void* gmem) {
  DITRON_EMU_HERE();
  if (DITRON_EMU_ARCH >= 80) emu::async_copy(smem, gmem, 4);
  else std::memcpy(smem, gmem, 4);
}
template <int N> DITRON_EMU_API inline void cp_async(void* smem, const void* gmem) {
  static_assert(N == 4 || N == 8 || N == 16, "cp.async copies 4, 8 or 16 bytes");
  DITRON_EMU_HERE();
  if (reinterpret_cast<uintptr_t>(smem) % N || reinterpret_cast<uintptr_t>(gmem) % N)
    emu::fail("cp.async of " + std::to_string(N) + " bytes from a misaligned address");
  if (DITRON_EMU_ARCH >= 80) emu::async_copy(smem, gmem, N);
  else std::memcpy(smem, gmem, N);
}
inline void cp_async_commit() { if (DITRON_EMU_ARCH >= 80) emu::async_commit(); }
template <int N> inline void cp_async_wait() { if (DITRON_EMU_ARCH >= 80) emu::async_wait(N); }

template <class T> inline uint32_t pack16x2(T lo, T hi) {
  static_assert(sizeof(T) == 2, "pack16x2 packs 16-bit values");
  uint16_t l, h;
  std::memcpy(&l, &lo, 2);
  std::memcpy(&h, &hi, 2);
  return uint32_t(l) | (uint32_t(h) << 16);
}

DITRON_EMU_API inline void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  DITRON_EMU_HERE();
  emu::LdmatrixArg a{r, p};
  emu::warp_collective("ldmatrix.x4", emu::ldmatrix_all<4, false>, &a);
}
DITRON_EMU_API inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  DITRON_EMU_HERE();
  emu::LdmatrixArg a{r, p};
  emu::warp_collective("ldmatrix.x4.trans", emu::ldmatrix_all<4, true>, &a);
}
DITRON_EMU_API inline void ldmatrix_x2(uint32_t (&r)[2], const void* p) {
  DITRON_EMU_HERE();
  emu::LdmatrixArg a{r, p};
  emu::warp_collective("ldmatrix.x2", emu::ldmatrix_all<2, false>, &a);
}
DITRON_EMU_API inline void ldmatrix_x2_trans(uint32_t (&r)[2], const void* p) {
  DITRON_EMU_HERE();
  emu::LdmatrixArg a{r, p};
  emu::warp_collective("ldmatrix.x2.trans", emu::ldmatrix_all<2, true>, &a);
}
template <class T> inline void mma_m16n8k16(float* d, const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  static_assert(std::is_same<T, half>::value || std::is_same<T, bfloat16>::value,
                "mma.sync.m16n8k16 takes float16 or bfloat16 operands");
  emu::MmaArg x{d, a, b};
  emu::warp_collective("mma.sync.m16n8k16", emu::mma_all<T>, &x);
}

}  // namespace ditron

// The generated file's entry points: DITRON_EMU_KERNELS(k0, k1, ...) after its kernels.
#define DITRON_EMU_KERNEL(fn) ::ditron::emu::Kernel{#fn, [](void** p) { ::ditron::emu::call(fn, p); }}

// ---- the thread-sanitizer hooks that kernels compiled with -fsanitize=thread call (no
// sanitizer runtime is linked: these are the emulator's). Only kernel code, running in a
// fiber, is checked; a hook re-entered through the checks' own code returns at once.
#if defined(__SANITIZE_THREAD__)
#define DITRON_EMU_HOOK extern "C" __attribute__((no_sanitize("thread"), used))
namespace ditron {
namespace emu {
inline bool in_hook_storage = false;
inline bool& in_hook() { return in_hook_storage; }
__attribute__((no_sanitize("thread"))) inline void hooked(void* p, size_t n, bool write, void* pc) {
  bool& busy = in_hook();
  busy = true;
  Launch& l = state();
  if (l.current && !l.in_runtime && watched(p, n)) {
    void* const outer = l.last_pc;     // (an instruction's own place, DITRON_EMU_HERE, stays)
    l.last_pc = pc;
    const char* what = write ? "a store" : "a load";
    const int64_t off = window_offset(p);
    // (the common case first: all n bytes in one shared array or the dynamic shared memory)
    if (off < 0 || window_offset(static_cast<const unsigned char*>(p) + n - 1) != off + int64_t(n) - 1)
      check_bounds(p, n, write, what);
    if (off >= 0) check_access_at(off, n, write, l.current->linear, what);
    if (profiler().on) profile_access_at(l.current->linear, pc, p, off, n);
    l.last_pc = outer;
  }
  busy = false;
}
}  // namespace emu
}  // namespace ditron
DITRON_EMU_HOOK void __tsan_init() {}
DITRON_EMU_HOOK void __tsan_func_entry(void*) {}
DITRON_EMU_HOOK void __tsan_func_exit() {}
// (the re-entry test first, inline: the checks' own accesses come back here by the thousand)
#define DITRON_EMU_CHECK(p, n, write) \
  if (!ditron::emu::in_hook_storage) ditron::emu::hooked(p, n, write, __builtin_return_address(0))
#define DITRON_EMU_RW(N)                                                                                    \
  DITRON_EMU_HOOK void __tsan_read##N(void* p) { DITRON_EMU_CHECK(p, N, false); }                           \
  DITRON_EMU_HOOK void __tsan_write##N(void* p) { DITRON_EMU_CHECK(p, N, true); }                           \
  DITRON_EMU_HOOK void __tsan_unaligned_read##N(void* p) { DITRON_EMU_CHECK(p, N, false); }                 \
  DITRON_EMU_HOOK void __tsan_unaligned_write##N(void* p) { DITRON_EMU_CHECK(p, N, true); }
DITRON_EMU_RW(1) DITRON_EMU_RW(2) DITRON_EMU_RW(4) DITRON_EMU_RW(8) DITRON_EMU_RW(16)
#undef DITRON_EMU_RW
DITRON_EMU_HOOK void __tsan_read_range(void* p, unsigned long n) { DITRON_EMU_CHECK(p, n, false); }
DITRON_EMU_HOOK void __tsan_write_range(void* p, unsigned long n) { DITRON_EMU_CHECK(p, n, true); }
#undef DITRON_EMU_CHECK
DITRON_EMU_HOOK void __tsan_vptr_update(void**, void*) {}
DITRON_EMU_HOOK void __tsan_vptr_read(void**) {}
// Atomics: real ones (the symmetric heap is shared with other ranks' processes; within a
// process one OS thread runs every fiber).
#define DITRON_EMU_ATOMIC(B, T)                                                                                   \
  DITRON_EMU_HOOK T __tsan_atomic##B##_load(const volatile T* a, int) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); } \
  DITRON_EMU_HOOK void __tsan_atomic##B##_store(volatile T* a, T v, int) { __atomic_store_n(a, v, __ATOMIC_SEQ_CST); } \
  DITRON_EMU_HOOK T __tsan_atomic##B##_exchange(volatile T* a, T v, int) { return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); } \
  DITRON_EMU_HOOK T __tsan_atomic##B##_fetch_add(volatile T* a, T v, int) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); } \
  DITRON_EMU_HOOK T __tsan_atomic##B##_fetch_sub(volatile T* a, T v, int) { return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST); } \
  DITRON_EMU_HOOK T __tsan_atomic##B##_fetch_and(volatile T* a, T v, int) { return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST); } \
  DITRON_EMU_HOOK T __tsan_atomic##B##_fetch_or(volatile T* a, T v, int) { return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); } \
  DITRON_EMU_HOOK int __tsan_atomic##B##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) {          \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); }                   \
  DITRON_EMU_HOOK int __tsan_atomic##B##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) {            \
    return __atomic_compare_exchange_n(a, c, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); }                    \
  DITRON_EMU_HOOK T __tsan_atomic##B##_compare_exchange_val(volatile T* a, T c, T v, int, int) {                \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); return c; }
DITRON_EMU_ATOMIC(8, unsigned char) DITRON_EMU_ATOMIC(16, unsigned short) DITRON_EMU_ATOMIC(32, unsigned)
DITRON_EMU_ATOMIC(64, unsigned long long)
#undef DITRON_EMU_ATOMIC
DITRON_EMU_HOOK void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
DITRON_EMU_HOOK void __tsan_atomic_signal_fence(int) {}
#endif
