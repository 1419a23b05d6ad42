// The CPU target's stand-in for NVSHMEM: puts, signals and waits between emulated ranks
// (processes) that map one shared-memory symmetric heap (ditron/runtime/heap.py).
//
// A kernel gets the world descriptor ``w`` = [rank, world size, wait timeout in ms,
// heap bytes per rank, heap base of rank 0, 1, ...] (addresses in this process). A symmetric address of this
// rank becomes rank pe's by moving it from this rank's heap segment to pe's, as
// nvshmem_ptr does. Signals are release stores and waits acquire loads, so the data put
// before a signal is visible to whoever saw the signal.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

namespace ditron {

inline int shm_rank(const int64_t* w) { return static_cast<int>(w[0]); }

template <class T> inline T* shm_peer(const int64_t* w, T* local, int pe, const char* what) {
  if (pe < 0 || pe >= w[1]) throw std::runtime_error(std::string(what) + ": rank " + std::to_string(pe) +
                                                     " is outside the world of " + std::to_string(w[1]));
  const uintptr_t mine = static_cast<uintptr_t>(w[4 + w[0]]);
  const uintptr_t other = static_cast<uintptr_t>(w[4 + pe]);
  const uintptr_t size = static_cast<uintptr_t>(w[3]);
  const uintptr_t p = reinterpret_cast<uintptr_t>(local);
  if (p < mine || p >= mine + size)
    throw std::runtime_error(std::string(what) + ": the buffer is not on the symmetric heap");
  return reinterpret_cast<T*>(other + (p - mine));
}

inline void shm_put(const int64_t* w, void* dst, const void* src, int64_t bytes, int pe, const char* what) {
  char* remote = shm_peer(w, static_cast<char*>(dst), pe, what);
  std::memcpy(remote, src, static_cast<size_t>(bytes));
}

inline void shm_get(const int64_t* w, void* dst, const void* src, int64_t bytes, int pe, const char* what) {
  const char* remote = shm_peer(w, static_cast<const char*>(src), pe, what);
  std::memcpy(dst, remote, static_cast<size_t>(bytes));
}

// Set rank pe's flag to ``value`` (add=false), or add ``value`` to it (add=true: counting flags).
inline void shm_signal(const int64_t* w, int64_t* flag, int64_t value, bool add, int pe, const char* what) {
  int64_t* remote = shm_peer(w, flag, pe, what);
  if (add) __atomic_fetch_add(remote, value, __ATOMIC_RELEASE);
  else __atomic_store_n(remote, value, __ATOMIC_RELEASE);
}

// Set when a wait of this process timed out: the other waits of the call (other blocks of
// a parallel loop) give up at once instead of each waiting out the timeout.
inline std::atomic<bool>& shm_failed() {
  static std::atomic<bool> failed{false};
  return failed;
}

// Call records and module headers (ditron/runtime/identity.py). Each rank's heap holds,
// at offset w[4 + world size] (-1: none), the record [2 * calls made, header offset, epoch,
// failed] of its current call; a module header is [magic, identity, text length, text ...].
inline int64_t* shm_record(const int64_t* w, int pe) {
  return reinterpret_cast<int64_t*>(static_cast<uintptr_t>(w[4 + pe] + w[4 + w[1]]));
}

// The record is a seqlock: word 0 is twice the number of calls made, odd while this rank
// rewrites the rest, so that a peer never takes one call's number with another's module.
inline void shm_begin_call(const int64_t* w, const int64_t* module, int64_t epoch) {
  shm_failed().store(false);
  if (w[4 + w[1]] < 0) return;
  int64_t* rec = shm_record(w, static_cast<int>(w[0]));
  const int64_t header = static_cast<int64_t>(reinterpret_cast<uintptr_t>(module) - static_cast<uintptr_t>(w[4 + w[0]]));
  const int64_t seq = __atomic_load_n(&rec[0], __ATOMIC_RELAXED);
  __atomic_store_n(&rec[0], seq + 1, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
  __atomic_store_n(&rec[1], header, __ATOMIC_RELAXED);
  __atomic_store_n(&rec[2], epoch, __ATOMIC_RELAXED);
  __atomic_store_n(&rec[0], seq + 2, __ATOMIC_RELEASE);
}

// "call #n to 'name'(args) (its epoch e)" of rank pe's record, as far as it can be read.
inline std::string shm_call_text(const int64_t* w, int pe, int64_t seq, int64_t header, int64_t epoch) {
  constexpr int64_t kMagic = 0x444954524f4e4d48;
  std::string text = "call #" + std::to_string(seq);
  const uintptr_t size = static_cast<uintptr_t>(w[3]);
  if (seq <= 0) return "no communicating call yet";
  if (header >= 0 && static_cast<uintptr_t>(header) + 512 <= size) {
    const int64_t* h = reinterpret_cast<const int64_t*>(static_cast<uintptr_t>(w[4 + pe] + header));
    if (h[0] == kMagic && h[2] > 0 && h[2] <= 488)
      text += " to " + std::string(reinterpret_cast<const char*>(h + 3), static_cast<size_t>(h[2]));
  }
  return text + " (its call " + std::to_string(epoch) + " of that module)";
}

// Rank pe's record as [calls made, header offset, epoch, failed], read consistently (false
// while it is being rewritten, or if it changed meanwhile: look again later).
inline bool shm_read_record(const int64_t* w, int pe, int64_t* out) {
  const int64_t* rec = shm_record(w, pe);
  const int64_t seq = __atomic_load_n(&rec[0], __ATOMIC_ACQUIRE);
  if (seq & 1) return false;
  out[1] = __atomic_load_n(&rec[1], __ATOMIC_RELAXED);
  out[2] = __atomic_load_n(&rec[2], __ATOMIC_RELAXED);
  out[3] = __atomic_load_n(&rec[3], __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  out[0] = seq / 2;
  return __atomic_load_n(&rec[0], __ATOMIC_RELAXED) == seq;
}

// A wait that is taking long: is the sending rank in the same call? If its call number is
// this one's and its module another, the ranks run different programs: fail now.
inline void shm_check_peer(const int64_t* w, int source, const char* tensor) {
  if (w[4 + w[1]] < 0 || source < 0 || source >= w[1] || source == w[0]) return;
  int64_t mine[4], peer[4];
  if (!shm_read_record(w, static_cast<int>(w[0]), mine) || !shm_read_record(w, source, peer)) return;
  const int me = static_cast<int>(w[0]);
  if (peer[3] != 0) {
    shm_failed().store(true);
    throw std::runtime_error("rank " + std::to_string(me) + ": rank " + std::to_string(source) +
                             " stopped with an error in its " + shm_call_text(w, source, peer[0], peer[1], peer[2]) +
                             " while this rank waited for tensor '" + tensor + "' in its " +
                             shm_call_text(w, me, mine[0], mine[1], mine[2]));
  }
  if (peer[0] == mine[0] && peer[1] != mine[1]) {
    shm_failed().store(true);
    throw std::runtime_error("ranks called different communicating modules at the same point: rank " +
                             std::to_string(me) + " is in its " + shm_call_text(w, me, mine[0], mine[1], mine[2]) +
                             ", rank " + std::to_string(source) + " in its " +
                             shm_call_text(w, source, peer[0], peer[1], peer[2]) +
                             ". Every rank must call the same modules, with the same shapes, in the same order");
  }
}

inline std::string shm_peer_state(const int64_t* w, int source) {
  if (w[4 + w[1]] < 0 || source < 0 || source >= w[1]) return "";
  int64_t peer[4];
  if (!shm_read_record(w, source, peer)) return "";
  return " Rank " + std::to_string(source) + " is in its " + shm_call_text(w, source, peer[0], peer[1], peer[2]) + ".";
}

// Wait until ``*flag >= value``; after the world's timeout, fail with what was expected.
inline void shm_wait(const int64_t* w, const int64_t* flag, int64_t value, const char* tensor, int chunk,
                     int source) {
  int64_t seen = __atomic_load_n(flag, __ATOMIC_ACQUIRE);
  if (seen >= value) return;
  const auto start = std::chrono::steady_clock::now();
  const auto limit = std::chrono::milliseconds(w[2]);
  for (int spins = 0;; ++spins) {
    seen = __atomic_load_n(flag, __ATOMIC_ACQUIRE);
    if (seen >= value) return;
    if (spins < 64) continue;
    std::this_thread::sleep_for(std::chrono::microseconds(spins < 1024 ? 10 : 200));
    if (shm_failed().load()) throw std::runtime_error("rank " + std::to_string(w[0]) + ": gave up waiting "
                                                      "for tensor '" + tensor + "' after another wait failed");
    if (spins % 64 == 0) shm_check_peer(w, source, tensor);
    if (std::chrono::steady_clock::now() - start > limit) {
      shm_failed().store(true);
      int64_t mine[4];
      const bool known = w[4 + w[1]] >= 0 && shm_read_record(w, static_cast<int>(w[0]), mine);
      throw std::runtime_error(
          "rank " + std::to_string(w[0]) + ": timed out after " + std::to_string(w[2] / 1000.0) +
          " s waiting for tensor '" + tensor + "' chunk " + std::to_string(chunk) + " (sent by rank " +
          std::to_string(source) + ")" +
          (known ? " in its " + shm_call_text(w, static_cast<int>(w[0]), mine[0], mine[1], mine[2]) : std::string()) +
          ": expected flag >= " + std::to_string(value) + ", observed " + std::to_string(seen) + "." +
          shm_peer_state(w, source) + " The sending rank may have died, skipped this call, or run a "
          "different number of calls (DITRON_WAIT_TIMEOUT sets the limit)");
    }
  }
}

}  // namespace ditron
