// The emulated GPU's NVSHMEM: the device API that ditron's kernels call (csrc/ditron/shmem_cuda.h,
// compiled unchanged), over the CPU target's symmetric heap (ditron/runtime/heap.py): every
// rank is a process that maps every rank's heap, so a symmetric address of this rank becomes
// PE pe's by moving it from this rank's heap segment to pe's (what nvshmem_ptr gives between
// GPUs on one node). The loader gives the heap's layout (ditron_emu_set_world, written by
// ditron/build/emulate.py), and queues the host's *_on_stream transfers through the same
// functions (ditron_emu_host_*).
//
// What is modelled (NVSHMEM 3 API, "Remote memory access" and "Signaling operations"):
// - puts and gets, per thread (nvshmem_putmem / getmem) and per block (nvshmemx_*_block:
//   every thread of the block must call them; as NVSHMEM's thread-group calls, they begin and
//   end with the block's barrier, and the emulator copies the bytes in between);
// - put-with-signal, signal_op (SET / ADD, as a real atomic on the peer's heap, which other
//   processes update too), signal_wait_until (every comparison): a waiting thread is parked
//   until the flag satisfies it; when every thread of its block waits and one of them waits
//   on such a flag, the emulator polls it (another rank or the host will set it) until the
//   world's wait timeout, or until a peer's call record says that peer failed;
// - fence and quiet: puts are delivered when they are issued (the strongest order, a legal one),
//   so both are memory fences.
// Not modelled (an EmulationError naming the call): the collectives (nvshmem_barrier_all, ...).
// Every address is checked: it must lie on this rank's symmetric heap (a byte {heap:OFF} of
// it, named by the loader), and PE numbers within the world.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "ditron/cuda.h"

typedef enum { NVSHMEM_SIGNAL_SET = 9, NVSHMEM_SIGNAL_ADD = 10 } nvshmemx_signal_op_t;
typedef enum {
  NVSHMEM_CMP_EQ = 0, NVSHMEM_CMP_NE, NVSHMEM_CMP_GT, NVSHMEM_CMP_LE, NVSHMEM_CMP_LT, NVSHMEM_CMP_GE
} nvshmemx_cmp_type_t;

namespace ditron {
namespace emu {

// The world as the loader describes it: this rank, the PEs, each rank's heap base in this
// process, and where each heap keeps its rank's call record (ditron/runtime/identity.py:
// [2 * calls made, header offset, epoch, failed]; -1: none).
struct Shmem {
  int rank = 0, npes = 0;
  uint64_t heap_bytes = 0;
  std::vector<uintptr_t> bases;
  int64_t record = -1;
  int64_t timeout_ms = 60000;
};
inline Shmem shmem_storage;
inline Shmem& shmem() { return shmem_storage; }

__attribute__((no_sanitize("thread"))) inline std::string heap_mark(uintptr_t p) {
  const Shmem& s = shmem();
  return "{heap:" + std::to_string(static_cast<int64_t>(p - s.bases[s.rank])) + "}";
}

// Rank pe's copy of the `bytes` at this rank's symmetric address p (what: the call).
__attribute__((no_sanitize("thread"))) inline unsigned char* peer_address(const void* p, size_t bytes, int pe,
                                                                        const char* what) {
  const Shmem& s = shmem();
  if (s.npes == 0) fail(std::string(what) + ": no NVSHMEM world (the program does not communicate)");
  if (pe < 0 || pe >= s.npes)
    fail(std::string(what) + ": PE " + std::to_string(pe) + " is outside the world of " + std::to_string(s.npes) +
         " PEs (0 to " + std::to_string(s.npes - 1) + ")");
  const uintptr_t mine = s.bases[s.rank], at = reinterpret_cast<uintptr_t>(p);
  if (at < mine || at >= mine + s.heap_bytes)
    fail(std::string(what) + ": the address " + std::to_string(at) + " is not on the symmetric heap (symmetric "
         "buffers come from nvshmem_malloc: dt.distributed.empty, or a communication operator's own buffers)");
  if (at + bytes > mine + s.heap_bytes)
    fail(std::string(what) + ": " + std::to_string(bytes) + " bytes from " + heap_mark(at) +
         " run past the end of the symmetric heap (" + std::to_string(s.heap_bytes) + " bytes per PE)");
  return reinterpret_cast<unsigned char*>(s.bases[pe] + (at - mine));
}

__attribute__((no_sanitize("thread"))) inline void shmem_copy(void* dst, const void* src, size_t bytes) {
  std::memcpy(dst, src, bytes);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

// put / get of `bytes` with PE pe (get: src is the symmetric address); the local side is
// checked as any access of the kernel, and a block's transfer counts in its profile as the
// bytes it reads and writes (as a copy loop's loads and stores would).
__attribute__((no_sanitize("thread"))) inline void shmem_transfer(bool get, void* dst, const void* src, size_t bytes,
                                                                int pe, const char* what) {
  if (bytes == 0) return;
  if (state().current) profile_bytes(2 * bytes);
  if (get) {
    const unsigned char* from = peer_address(src, bytes, pe, what);
    check_bounds(dst, bytes, true, what);
    shmem_copy(dst, from, bytes);
  } else {
    unsigned char* to = peer_address(dst, bytes, pe, what);
    check_bounds(src, bytes, false, what);
    shmem_copy(to, src, bytes);
  }
}

__attribute__((no_sanitize("thread"))) inline void shmem_signal(uint64_t* sig, uint64_t value, int op, int pe,
                                                              const char* what) {
  if (reinterpret_cast<uintptr_t>(sig) % 8) fail(std::string(what) + ": the signal word is not 8-byte aligned");
  if (op != NVSHMEM_SIGNAL_SET && op != NVSHMEM_SIGNAL_ADD)
    fail(std::string(what) + ": signal operation " + std::to_string(op) +
         " (valid: NVSHMEM_SIGNAL_SET, NVSHMEM_SIGNAL_ADD)");
  uint64_t* remote = reinterpret_cast<uint64_t*>(peer_address(sig, 8, pe, what));
  std::atomic_thread_fence(std::memory_order_seq_cst);      // (earlier puts first)
  if (op == NVSHMEM_SIGNAL_ADD) __atomic_fetch_add(remote, value, __ATOMIC_SEQ_CST);
  else __atomic_store_n(remote, value, __ATOMIC_SEQ_CST);
}

__attribute__((no_sanitize("thread"))) inline bool signal_holds(const uint64_t* sig, int cmp, uint64_t value) {
  const uint64_t v = __atomic_load_n(sig, __ATOMIC_ACQUIRE);
  switch (cmp) {
    case NVSHMEM_CMP_EQ: return v == value;
    case NVSHMEM_CMP_NE: return v != value;
    case NVSHMEM_CMP_GT: return v > value;
    case NVSHMEM_CMP_LE: return v <= value;
    case NVSHMEM_CMP_LT: return v < value;
    default: return v >= value;
  }
}

inline const char* cmp_text(int cmp) {
  static const char* const ops[] = {"==", "!=", ">", "<=", "<", ">="};
  return cmp >= 0 && cmp <= 5 ? ops[cmp] : "?";
}

// Whether rank pe's call record says it stopped with an error (false without records).
__attribute__((no_sanitize("thread"))) inline bool peer_failed(int pe) {
  const Shmem& s = shmem();
  if (s.record < 0 || pe == s.rank) return false;
  const int64_t* rec = reinterpret_cast<const int64_t*>(s.bases[pe] + s.record);
  return __atomic_load_n(&rec[3], __ATOMIC_ACQUIRE) != 0;
}

// While a block (or the host) waits on memory that other ranks change: a peer that stopped
// with an error, or the wait timeout, ends the wait; "" while it may go on.
__attribute__((no_sanitize("thread"))) inline std::string external_wait_verdict(
    std::chrono::steady_clock::time_point since, const std::function<std::string()>& waits) {
  const Shmem& s = shmem();
  for (int pe = 0; pe < s.npes; ++pe)
    if (peer_failed(pe))
      return "rank " + std::to_string(s.rank) + ": rank " + std::to_string(pe) + " stopped with an error while " +
             waits();
  const auto waited = std::chrono::steady_clock::now() - since;
  if (waited > std::chrono::milliseconds(s.timeout_ms)) {
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.1f", s.timeout_ms / 1000.0);
    return "rank " + std::to_string(s.rank) + ": timed out after " + secs + " s (DITRON_WAIT_TIMEOUT): " + waits();
  }
  return "";
}

inline const bool external_check_registered =
    (external_check = &external_wait_verdict, other_writers = [] { return shmem().npes > 1 ? shmem().npes - 1 : 0; }, true);

// "the signal at {heap:OFF} to be >= 3 (it is 2)": what a wait for it waits for.
__attribute__((no_sanitize("thread"))) inline std::string signal_text(const uint64_t* sig, int cmp, uint64_t value) {
  return "the signal at " + heap_mark(reinterpret_cast<uintptr_t>(sig)) + " to be " + cmp_text(cmp) + " " +
         std::to_string(value) + " (it is " + std::to_string(__atomic_load_n(sig, __ATOMIC_ACQUIRE)) + ")";
}

// Park the calling thread until the signal holds (polled by the scheduler: see sync in cuda.h).
inline void signal_wait(uint64_t* sig, int cmp, uint64_t value, const char* what) {
  peer_address(sig, 8, shmem().rank, what);
  wait_until([sig, cmp, value] { return signal_holds(sig, cmp, value); },
             [sig, cmp, value, what] { return std::string(what) + " (" + signal_text(sig, cmp, value) + ")"; },
             true);
}

// A block-wide NVSHMEM call: the block's barrier, the operation (once, by the emulator), the
// barrier again (NVSHMEM's thread-group calls synchronize the group on entry and exit).
template <class Op> inline void block_call(const char* what, void* pc, Op op) {
  block_barrier(what);
  if (self().linear == 0) {
    state().last_pc = pc;
    op();
  }
  block_barrier(what);
  state().last_pc = nullptr;
}

}  // namespace emu
}  // namespace ditron

// ---- the device API (NVSHMEM 3, host/nvshmem_api.h and host/nvshmemx_api.h)
DITRON_EMU_API inline int nvshmem_my_pe() { return ::ditron::emu::shmem().rank; }
DITRON_EMU_API inline int nvshmem_n_pes() { return ::ditron::emu::shmem().npes; }
DITRON_EMU_API inline void* nvshmem_ptr(const void* p, int pe) {
  DITRON_EMU_HERE();
  return ::ditron::emu::peer_address(p, 1, pe, "nvshmem_ptr");
}
DITRON_EMU_API inline void nvshmem_putmem(void* dst, const void* src, size_t bytes, int pe) {
  DITRON_EMU_HERE();
  ::ditron::emu::shmem_transfer(false, dst, src, bytes, pe, "nvshmem_putmem");
}
DITRON_EMU_API inline void nvshmem_getmem(void* dst, const void* src, size_t bytes, int pe) {
  DITRON_EMU_HERE();
  ::ditron::emu::shmem_transfer(true, dst, src, bytes, pe, "nvshmem_getmem");
}
DITRON_EMU_API inline void nvshmemx_putmem_block(void* dst, const void* src, size_t bytes, int pe) {
  ::ditron::emu::block_call("nvshmemx_putmem_block", __builtin_return_address(0), [=] {
    ::ditron::emu::shmem_transfer(false, dst, src, bytes, pe, "nvshmemx_putmem_block");
  });
}
DITRON_EMU_API inline void nvshmemx_getmem_block(void* dst, const void* src, size_t bytes, int pe) {
  ::ditron::emu::block_call("nvshmemx_getmem_block", __builtin_return_address(0), [=] {
    ::ditron::emu::shmem_transfer(true, dst, src, bytes, pe, "nvshmemx_getmem_block");
  });
}
DITRON_EMU_API inline void nvshmem_putmem_signal(void* dst, const void* src, size_t bytes, uint64_t* sig,
                                                 uint64_t value, int op, int pe) {
  DITRON_EMU_HERE();
  ::ditron::emu::shmem_transfer(false, dst, src, bytes, pe, "nvshmem_putmem_signal");
  ::ditron::emu::shmem_signal(sig, value, op, pe, "nvshmem_putmem_signal");
}
DITRON_EMU_API inline void nvshmemx_putmem_signal_block(void* dst, const void* src, size_t bytes, uint64_t* sig,
                                                        uint64_t value, int op, int pe) {
  ::ditron::emu::block_call("nvshmemx_putmem_signal_block", __builtin_return_address(0), [=] {
    ::ditron::emu::shmem_transfer(false, dst, src, bytes, pe, "nvshmemx_putmem_signal_block");
    ::ditron::emu::shmem_signal(sig, value, op, pe, "nvshmemx_putmem_signal_block");
  });
}
DITRON_EMU_API inline void nvshmemx_signal_op(uint64_t* sig, uint64_t value, int op, int pe) {
  DITRON_EMU_HERE();
  ::ditron::emu::shmem_signal(sig, value, op, pe, "nvshmemx_signal_op");
}
DITRON_EMU_API inline uint64_t nvshmem_signal_wait_until(uint64_t* sig, int cmp, uint64_t value) {
  DITRON_EMU_HERE();
  if (cmp < NVSHMEM_CMP_EQ || cmp > NVSHMEM_CMP_GE)
    ::ditron::emu::fail("nvshmem_signal_wait_until: comparison " + std::to_string(cmp) + " (valid: NVSHMEM_CMP_EQ, "
                        "_NE, _GT, _LE, _LT, _GE)");
  ::ditron::emu::signal_wait(sig, cmp, value, "nvshmem_signal_wait_until");
  return __atomic_load_n(sig, __ATOMIC_ACQUIRE);
}
DITRON_EMU_API inline uint64_t nvshmem_signal_fetch(uint64_t* sig) {
  DITRON_EMU_HERE();
  ::ditron::emu::peer_address(sig, 8, ::ditron::emu::shmem().rank, "nvshmem_signal_fetch");
  return __atomic_load_n(sig, __ATOMIC_ACQUIRE);
}
inline void nvshmem_fence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void nvshmem_quiet() { std::atomic_thread_fence(std::memory_order_seq_cst); }
DITRON_EMU_API inline void nvshmem_barrier_all() {
  DITRON_EMU_HERE();
  ::ditron::emu::fail("nvshmem_barrier_all: the emulated GPU does not model NVSHMEM's collectives");
}
DITRON_EMU_API inline void nvshmemx_barrier_all_block() {
  DITRON_EMU_HERE();
  ::ditron::emu::fail("nvshmemx_barrier_all_block: the emulated GPU does not model NVSHMEM's collectives");
}

// ---- the loader's side (ditron/build/emulate.py): the world, and the host's stream transfers
// (queued on the emulated streams, with the kernels: see sync in cuda.h).
namespace ditron {
namespace emu {
inline void set_world(int rank, int npes, uint64_t heap_bytes, const uint64_t* bases, int64_t record,
                      int64_t timeout_ms) {
  Shmem& s = shmem();
  s.rank = rank;
  s.npes = npes;
  s.heap_bytes = heap_bytes;
  s.bases.assign(bases, bases + npes);
  s.record = record;
  s.timeout_ms = timeout_ms;
}

// Queue a host operation on a stream (kind: 0 put, 1 get, 2 signal set, 3 signal add, 4 wait
// for the signal to be >=): it runs when it reaches the stream's head (see sync in cuda.h).
inline void queue_host_shmem(int stream, int kind, void* dst, const void* src, uint64_t bytes, uint64_t value, int pe,
                             const char* what_) {
  const std::string what = what_;
  HostOp op;
  uint64_t* sig = static_cast<uint64_t*>(dst);
  if (kind <= 3) {
    op.run = [=]() {
      if (kind <= 1) shmem_transfer(kind == 1, dst, src, bytes, pe, what.c_str());
      else shmem_signal(sig, value, kind == 3 ? NVSHMEM_SIGNAL_ADD : NVSHMEM_SIGNAL_SET, pe, what.c_str());
      return true;
    };
  } else {
    op.run = [=]() {
      peer_address(sig, 8, shmem().rank, what.c_str());
      return signal_holds(sig, NVSHMEM_CMP_GE, value);
    };
  }
  op.waits_for = [=]() { return what + " for " + signal_text(sig, NVSHMEM_CMP_GE, value); };
  StreamOp s;
  s.host = std::move(op);
  queue(stream, std::move(s));
}
}  // namespace emu
}  // namespace ditron
