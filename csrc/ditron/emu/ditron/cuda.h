// The emulated GPU: what ditron/cuda.h gives kernels, for the host C++ compiler, so that the
// device part of a generated CUDA file runs unchanged on the CPU (ditron/build/emulate.py
// puts this folder before csrc/ on the include path).
//
// Execution model. A launch runs its blocks one after another; the threads of a block are
// fibers on one OS thread, each running the kernel function with its own threadIdx.
// A fiber runs until it reaches a synchronization point (__syncthreads, the end of the
// kernel), then the next runnable fiber runs: deterministic, in thread order, or in an
// order drawn from DITRON_EMULATE_SEED. What the real hardware leaves undefined is made
// visible: shared memory holds NaN bytes (0xff) when a block starts; an asynchronous copy
// poisons its destination when issued and lands at the cp.async.wait_group that must
// wait for it (or never, if none does); a barrier that some thread of the block leaves
// unreached is an error, as is an instruction the emulator does not model. Errors end the
// launch with a message (ditron_emu_error), never a hang.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "ditron/half_types.h"

// ---- the CUDA language, for the host compiler
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __grid_constant__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Static shared arrays are static locals in one section, which every block start fills
// with NaN bytes (blocks run one at a time, so one copy serves them all).
#define __shared__ __attribute__((section("ditron_emu_shared"))) static
// CUDA's vector types, with their alignment (vector loads and stores use them)
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };

namespace ditron {
namespace emu {

struct uint3_ { unsigned x, y, z; };

[[noreturn]] void fail(const std::string& what);

struct Fiber {
  void* sp = nullptr;              // saved stack pointer while switched out
  std::unique_ptr<unsigned char[]> stack;   // (uninitialized: a fiber writes before it reads)
  uint3_ tid{0, 0, 0};
  int linear = 0;                  // thread number within the block
  enum State { READY, AT_BARRIER, AT_WARP, WAITING, DONE } state = READY;
  // WAITING: blocked until can_go() (an mbarrier phase); waits_for() says on what
  std::function<bool()> can_go;
  std::function<std::string()> waits_for;
  long barriers = 0;               // __syncthreads reached so far
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
  unsigned epoch = 0;                    // barriers the block has passed (the race detector's clock)
  int in_runtime = 0;                    // > 0: the emulator's own code runs (its accesses are not the kernel's)
  Fiber* current = nullptr;
  void* scheduler_sp = nullptr;
  std::string error;
  void* last_pc = nullptr;               // where in the kernel the instruction being checked is
  std::mt19937_64 order;
  bool shuffled = false;
};

inline Launch& state() {
  static Launch l;
  return l;
}

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
constexpr size_t STACK_BYTES = 128 * 1024;
constexpr size_t SHARED_ALIGN = 1024;    // the widest alignment kernels ask of dynamic shared memory

inline std::string thread_name(const Fiber& f) {
  const Launch& l = state();
  return "thread (" + std::to_string(f.tid.x) + ", " + std::to_string(f.tid.y) + ", " +
         std::to_string(f.tid.z) + ") of block (" + std::to_string(l.block_idx.x) + ", " +
         std::to_string(l.block_idx.y) + ", " + std::to_string(l.block_idx.z) + ")";
}

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
  if (!f.stack) f.stack.reset(new unsigned char[STACK_BYTES]);
  uintptr_t top = reinterpret_cast<uintptr_t>(f.stack.get() + STACK_BYTES) & ~uintptr_t(15);
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

// Run one block: every fiber to its next synchronization point, in turn, until all are done.
inline bool run_block() {
  Launch& l = state();
  poison_shared();
  l.epoch = 0;
  l.in_runtime = 0;
  for (void (*reset)() : l.block_start) reset();
  for (Fiber& f : l.fibers) start_fiber(f);
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
        return false;
      }
      std::string waits;
      for (const Fiber& f : l.fibers)
        if (f.state == Fiber::WAITING) waits += (waits.empty() ? "" : "; ") + thread_name(f) + " waits for " + f.waits_for();
      if (!waits.empty()) {
        l.error = "deadlock: every thread of the block waits: " + waits;
        return false;
      }
      const Fiber* waiting = nullptr;
      const Fiber* done = nullptr;
      for (const Fiber& f : l.fibers) (f.state == Fiber::AT_BARRIER ? waiting : done) = &f;
      if (!waiting) return true;                               // every thread finished
      if (done) {
        l.error = thread_name(*waiting) + " waits at __syncthreads (its barrier number " +
                  std::to_string(waiting->barriers) + ") that " + thread_name(*done) +
                  " never reaches: it finished the kernel (a barrier must be reached by every "
                  "thread of the block)";
        return false;
      }
      for (Fiber& f : l.fibers) f.state = Fiber::READY;       // everyone arrived: release
      ++l.epoch;
      continue;
    }
    if (l.shuffled) std::shuffle(ready.begin(), ready.end(), l.order);
    for (Fiber* f : ready) {
      l.current = f;
      ditron_emu_switch(&l.scheduler_sp, f->sp);
      l.current = nullptr;
      if (!l.error.empty()) return false;
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

inline int launch(const Kernel& k, const unsigned* grid, const unsigned* block, unsigned smem, void** params) {
  Launch& l = state();
  l.body = k.body;
  l.params = params;
  l.grid = {grid[0], grid[1], grid[2]};
  l.block = {block[0], block[1], block[2]};
  l.error.clear();
  l.dynamic_storage.reset(new unsigned char[smem + SHARED_ALIGN]);
  l.dynamic_shared = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(l.dynamic_storage.get()) + SHARED_ALIGN - 1) & ~uintptr_t(SHARED_ALIGN - 1));
  l.dynamic_bytes = smem;
  const char* seed = std::getenv("DITRON_EMULATE_SEED");
  l.shuffled = seed && *seed;
  if (l.shuffled) {
    char* end = nullptr;
    const unsigned long long n = std::strtoull(seed, &end, 10);
    if (*end != '\0') {
      l.error = std::string("DITRON_EMULATE_SEED=") + seed + ": expected a non-negative integer (or unset it)";
      return 1;
    }
    l.order.seed(n);
  }
  const unsigned n = block[0] * block[1] * block[2];
  if (n == 0 || n > 1024) {
    l.error = std::string("kernel ") + k.name + ": a block of " + std::to_string(n) + " threads (1 to 1024)";
    return 1;
  }
  l.fibers.resize(n);
  l.warps.assign((n + 31) / 32, WarpMeeting{});
  l.warpgroups.assign((n + 127) / 128, WarpMeeting{});
  for (WarpMeeting& m : l.warpgroups) m.size = 128;
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = l.fibers[i];
    f.linear = static_cast<int>(i);
    f.tid = {i % block[0], (i / block[0]) % block[1], i / (block[0] * block[1])};
  }
  for (unsigned z = 0; z < grid[2]; ++z)
    for (unsigned y = 0; y < grid[1]; ++y)
      for (unsigned x = 0; x < grid[0]; ++x) {
        l.block_idx = {x, y, z};
        bool ok;
        try {
          ok = run_block();
        } catch (const Failure& e) {
          l.error = "block (" + std::to_string(x) + ", " + std::to_string(y) + ", " + std::to_string(z) + "): " + e.what;
          ok = false;
        }
        if (!ok) {
          l.error = std::string("kernel ") + k.name + ": " + l.error;
          return 1;
        }
      }
  return 0;
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
inline Shadow& shadow() {
  static Shadow s;
  return s;
}

// The shared window offset of p, or -1 outside shared memory.
inline int64_t window_offset(const void* p) {
  const Launch& l = state();
  const unsigned char* c = static_cast<const unsigned char*>(p);
  if (l.dynamic_bytes && c >= l.dynamic_shared && c < l.dynamic_shared + l.dynamic_bytes) return c - l.dynamic_shared;
  if (__start_ditron_emu_shared != nullptr && c >= __start_ditron_emu_shared && c < __stop_ditron_emu_shared)
    return int64_t(shadow().dynamic_window + (c - __start_ditron_emu_shared));
  return -1;
}

inline void reset_shadow() {
  const Launch& l = state();
  Shadow& s = shadow();
  s.dynamic_window = (l.dynamic_bytes + 1023) & ~size_t(1023);
  const size_t stat = __start_ditron_emu_shared ? size_t(__stop_ditron_emu_shared - __start_ditron_emu_shared) : 0;
  s.bytes.assign(s.dynamic_window + stat, ByteState{});
}
inline const bool shadow_registered = (state().block_start.push_back(&reset_shadow), true);

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
  return size_t(off) < dyn ? "{shared:dynamic:" + std::to_string(off) + "}"
                           : "{shared:static:" + std::to_string(size_t(off) - dyn) + "}";
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
inline void check_access(const void* p, size_t n, bool write, int linear, const char* what) {
  const int64_t off = window_offset(p);
  if (off < 0) return;
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

// What kernels call directly is not inlined, so that its return address is the call's
// place in the kernel (for the source line of an error).
#define DITRON_EMU_API __attribute__((noinline))
struct Here {         // the call's place in the kernel while the instruction runs
  explicit Here(void* pc) { state().last_pc = pc; }
  ~Here() { state().last_pc = nullptr; }
};
#define DITRON_EMU_HERE() ::ditron::emu::Here ditron_emu_here(__builtin_return_address(0))

// ---- what kernels call
inline void syncthreads() {
  Fiber& f = self();
  f.state = Fiber::AT_BARRIER;
  ++f.barriers;
  yield_to_scheduler();
}

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
inline void wait_until(std::function<bool()> can_go, std::function<std::string()> waits_for) {
  if (can_go()) return;
  Fiber& f = self();
  f.can_go = std::move(can_go);
  f.waits_for = std::move(waits_for);
  f.state = Fiber::WAITING;
  yield_to_scheduler();
}

inline bool in_shared(const void* p, size_t bytes) {
  const unsigned char* c = static_cast<const unsigned char*>(p);
  const Launch& l = state();
  if (l.dynamic_bytes && c >= l.dynamic_shared && c + bytes <= l.dynamic_shared + l.dynamic_bytes) return true;
  return __start_ditron_emu_shared != nullptr && c >= __start_ditron_emu_shared &&
         c + bytes <= __stop_ditron_emu_shared;
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
    check_access(p, 16, false, state().warps.empty() ? i : (self().linear / 32) * 32 + i, what);
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
inline bool& in_hook() {
  static bool on = false;
  return on;
}
__attribute__((no_sanitize("thread"))) inline void hooked(void* p, size_t n, bool write, void* pc) {
  bool& busy = in_hook();
  if (busy) return;
  busy = true;
  Launch& l = state();
  if (l.current && !l.in_runtime && window_offset(p) >= 0) {
    l.last_pc = pc;
    check_access(p, n, write, l.current->linear, write ? "a store" : "a load");
    l.last_pc = nullptr;
  }
  busy = false;
}
}  // namespace emu
}  // namespace ditron
DITRON_EMU_HOOK void __tsan_init() {}
DITRON_EMU_HOOK void __tsan_func_entry(void*) {}
DITRON_EMU_HOOK void __tsan_func_exit() {}
#define DITRON_EMU_RW(N)                                                                                    \
  DITRON_EMU_HOOK void __tsan_read##N(void* p) { ditron::emu::hooked(p, N, false, __builtin_return_address(0)); }  \
  DITRON_EMU_HOOK void __tsan_write##N(void* p) { ditron::emu::hooked(p, N, true, __builtin_return_address(0)); }  \
  DITRON_EMU_HOOK void __tsan_unaligned_read##N(void* p) { ditron::emu::hooked(p, N, false, __builtin_return_address(0)); } \
  DITRON_EMU_HOOK void __tsan_unaligned_write##N(void* p) { ditron::emu::hooked(p, N, true, __builtin_return_address(0)); }
DITRON_EMU_RW(1) DITRON_EMU_RW(2) DITRON_EMU_RW(4) DITRON_EMU_RW(8) DITRON_EMU_RW(16)
#undef DITRON_EMU_RW
DITRON_EMU_HOOK void __tsan_read_range(void* p, unsigned long n) { ditron::emu::hooked(p, n, false, __builtin_return_address(0)); }
DITRON_EMU_HOOK void __tsan_write_range(void* p, unsigned long n) { ditron::emu::hooked(p, n, true, __builtin_return_address(0)); }
DITRON_EMU_HOOK void __tsan_vptr_update(void**, void*) {}
DITRON_EMU_HOOK void __tsan_vptr_read(void**) {}
// Atomics: one OS thread runs every fiber, so the plain operation is the atomic one.
#define DITRON_EMU_ATOMIC(B, T)                                                                                   \
  DITRON_EMU_HOOK T __tsan_atomic##B##_load(const volatile T* a, int) { return *a; }                            \
  DITRON_EMU_HOOK void __tsan_atomic##B##_store(volatile T* a, T v, int) { *a = v; }                            \
  DITRON_EMU_HOOK T __tsan_atomic##B##_exchange(volatile T* a, T v, int) { T o = *a; *a = v; return o; }        \
  DITRON_EMU_HOOK T __tsan_atomic##B##_fetch_add(volatile T* a, T v, int) { T o = *a; *a = o + v; return o; }   \
  DITRON_EMU_HOOK T __tsan_atomic##B##_fetch_sub(volatile T* a, T v, int) { T o = *a; *a = o - v; return o; }   \
  DITRON_EMU_HOOK T __tsan_atomic##B##_fetch_and(volatile T* a, T v, int) { T o = *a; *a = o & v; return o; }   \
  DITRON_EMU_HOOK T __tsan_atomic##B##_fetch_or(volatile T* a, T v, int) { T o = *a; *a = o | v; return o; }    \
  DITRON_EMU_HOOK int __tsan_atomic##B##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) {          \
    if (*a == *c) { *a = v; return 1; } *c = *a; return 0; }                                                     \
  DITRON_EMU_HOOK int __tsan_atomic##B##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) {            \
    if (*a == *c) { *a = v; return 1; } *c = *a; return 0; }                                                     \
  DITRON_EMU_HOOK T __tsan_atomic##B##_compare_exchange_val(volatile T* a, T c, T v, int, int) {                \
    T o = *a; if (o == c) *a = v; return o; }
DITRON_EMU_ATOMIC(8, unsigned char) DITRON_EMU_ATOMIC(16, unsigned short) DITRON_EMU_ATOMIC(32, unsigned)
DITRON_EMU_ATOMIC(64, unsigned long long)
#undef DITRON_EMU_ATOMIC
DITRON_EMU_HOOK void __tsan_atomic_thread_fence(int) {}
DITRON_EMU_HOOK void __tsan_atomic_signal_fence(int) {}
#endif
