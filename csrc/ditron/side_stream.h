// The side stream of an overlapped all_gather, for the CUDA and the HIP runtime alike:
// the communication region runs beside the consumer kernel on the caller's stream, forked
// after what the caller queued and joined before the closing region. One side stream (and
// its two events) per host thread.
//
// The including header names the runtime API first: #define DITRON_RT(name) cuda##name
// (shmem_cuda.h) or hip##name (shmem_hip.h); the calls below are the same in both.
#pragma once
#include <stdexcept>
#include <string>

namespace ditron {

struct SideStream {
  DITRON_RT(Stream_t) stream = nullptr;
  DITRON_RT(Event_t) fork = nullptr, join = nullptr;
};

inline void side_check(DITRON_RT(Error_t) err, const char* what) {
  if (err != DITRON_RT(Success)) {
    throw std::runtime_error(std::string(what) + ": " + DITRON_RT(GetErrorString)(err));
  }
}

inline SideStream& side_state() {
  static thread_local SideStream st;
  if (st.stream == nullptr) {
    side_check(DITRON_RT(StreamCreateWithFlags)(&st.stream, DITRON_RT(StreamNonBlocking)),
               "creating the side stream");
    side_check(DITRON_RT(EventCreateWithFlags)(&st.fork, DITRON_RT(EventDisableTiming)), "creating the fork event");
    side_check(DITRON_RT(EventCreateWithFlags)(&st.join, DITRON_RT(EventDisableTiming)), "creating the join event");
  }
  return st;
}

inline DITRON_RT(Stream_t) side_stream(DITRON_RT(Stream_t) main) {
  SideStream& st = side_state();
  side_check(DITRON_RT(EventRecord)(st.fork, main), "forking the side stream");
  side_check(DITRON_RT(StreamWaitEvent)(st.stream, st.fork, 0), "forking the side stream");
  return st.stream;
}

inline void join_side_stream(DITRON_RT(Stream_t) main) {
  SideStream& st = side_state();
  side_check(DITRON_RT(EventRecord)(st.join, st.stream), "joining the side stream");
  side_check(DITRON_RT(StreamWaitEvent)(main, st.join, 0), "joining the side stream");
}

}  // namespace ditron
