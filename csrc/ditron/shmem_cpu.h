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

inline void shm_begin_call() { shm_failed().store(false); }

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
    if (std::chrono::steady_clock::now() - start > limit) {
      shm_failed().store(true);
      throw std::runtime_error(
          "rank " + std::to_string(w[0]) + ": timed out after " + std::to_string(w[2] / 1000.0) +
          " s waiting for tensor '" + tensor + "' chunk " + std::to_string(chunk) + " (sent by rank " +
          std::to_string(source) + "): expected flag >= " + std::to_string(value) + ", observed " +
          std::to_string(seen) + ". The sending rank may have died, skipped this call, or run a "
          "different number of calls (DITRON_WAIT_TIMEOUT sets the limit)");
    }
  }
}

}  // namespace ditron
