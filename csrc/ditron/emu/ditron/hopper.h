// The emulated GPU's Hopper helpers (what ditron/hopper.h gives wgmma kernels), for the host
// C++ compiler: mbarriers with phases, arrival and transaction (byte) counts; TMA tile loads
// with the tensor map's box, zero fill and the 128-byte swizzle, landing when a thread
// waits on their mbarrier; shared-memory matrix descriptors built as the real helper
// builds them and decoded by wgmma (start address, leading / stride byte offsets, swizzle
// mode, base offset); wgmma.mma_async of a warpgroup, committed in groups that run at the
// wgmma.wait_group that must wait for them, reading shared memory then.
//
// Facts used (PTX ISA 8.x): "Shared memory matrix layout" and "Matrix descriptor" of
// wgmma (bits 0-13 start address >> 4, 16-29 leading byte offset >> 4, 32-45 stride byte
// offset >> 4, 49-51 base offset, 62-63 swizzle mode, 1 = 128-byte); "Register fragments"
// of wgmma .m64nNk16 with .f32 accumulators (thread t of the warpgroup, warp w = t / 32,
// lane l: d[4j + 0..1] = row 16w + l / 4, columns 8j + 2(l % 4) + 0..1; d[4j + 2..3] =
// row + 8); the 128-byte swizzle XORs address bits 4-6 with bits 7-9; mbarrier.try_wait
// .parity P succeeds once the phase of parity P has completed.
#pragma once
#include <map>

// ---- tensor maps (the driver API's names; made by the loader through ditron_emu_make_tma_2d)
enum CUtensorMapDataType { CU_TENSOR_MAP_DATA_TYPE_FLOAT16 = 6, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 = 9 };
struct alignas(64) CUtensorMap {
  const unsigned char* base;
  uint64_t rows, cols;            // of the row-major tensor
  uint32_t box_rows, box_cols;
  uint32_t elem_bytes;
};

namespace ditron {

namespace emu {

// The shared window: dynamic shared memory from offset 0, the static arrays after it.
// (the window of cuda.h's window_offset)
inline uint32_t shared_offset(const void* p, const char* what) {
  const int64_t off = window_offset(p);
  if (off < 0) {
    const std::string oob = bounds_error(p, 1);
    fail(oob.empty() ? std::string(what) + ": an address outside shared memory"
                     : "out-of-bounds access: " + std::string(what) + " at " + oob);
  }
  return static_cast<uint32_t>(off);
}

inline unsigned char* shared_at(uint64_t off, size_t bytes, const char* what) {
  if (unsigned char* p = window_pointer(off, bytes)) return p;
  fail(std::string(what) + ": shared-memory offset " + std::to_string(off) + " lies outside shared memory");
}

inline uint64_t swizzle128(uint64_t off) { return off ^ (((off >> 7) & 7) << 4); }

// ---- mbarriers
struct PendingTma { unsigned char* dst; uint32_t dst_off; CUtensorMap map; int32_t c0, c1; };
struct Mbarrier {
  uint32_t count = 0;     // arrivals per phase
  int64_t pending = 0;    // arrivals still missing in this phase
  int64_t tx = 0;         // bytes announced (expect_tx) and not yet delivered
  uint32_t phase = 0;     // completed phases
  std::vector<PendingTma> tmas;
};

struct HopperState {
  std::map<uint32_t, Mbarrier> bars;        // by shared offset
  // wgmma groups per warpgroup: committed ones, then the open one
  struct Op { uint64_t a, b; int n; bool bf16; float* acc[128]; };
  std::map<int, std::vector<std::vector<Op>>> groups;
};
inline HopperState hopper_storage;
inline HopperState& hopper() { return hopper_storage; }
inline void reset_hopper() { hopper() = HopperState{}; }
inline const bool hopper_registered = (state().block_start.push_back(&reset_hopper), true);
inline const bool hopper_parks = (state().block_swap.push_back([](std::shared_ptr<void>& s) {
  swap_parked(hopper(), s);
}), true);

inline Mbarrier& bar_at(uint64_t* bar, const char* what) {
  const uint32_t off = shared_offset(bar, what);
  auto it = hopper().bars.find(off);
  if (it == hopper().bars.end())
    fail(std::string(what) + ": the mbarrier at shared offset " + std::to_string(off) + " was not initialized");
  return it->second;
}

inline void bar_progress(Mbarrier& b, uint32_t off) {
  if (b.tx < 0)
    fail("mbarrier at shared offset " + std::to_string(off) + ": TMA delivered " + std::to_string(-b.tx) +
         " bytes more than expect_tx announced for its phase " + std::to_string(b.phase));
  if (b.pending == 0 && b.tx == 0) {
    ++b.phase;
    b.pending = b.count;
  }
}

inline void land(PendingTma& t) {
  const CUtensorMap& m = t.map;
  const uint32_t row_bytes = m.box_cols * m.elem_bytes;
  for (uint32_t r = 0; r < m.box_rows; ++r)
    for (uint32_t c = 0; c < m.box_cols; ++c) {
      const int64_t gr = int64_t(t.c1) + r, gc = int64_t(t.c0) + c;
      const uint64_t off = swizzle128(t.dst_off + uint64_t(r) * row_bytes + uint64_t(c) * m.elem_bytes);
      unsigned char* dst = shared_at(off, m.elem_bytes, "cp.async.bulk.tensor");
      if (gr >= 0 && gc >= 0 && uint64_t(gr) < m.rows && uint64_t(gc) < m.cols) {
        std::memcpy(dst, m.base + (uint64_t(gr) * m.cols + uint64_t(gc)) * m.elem_bytes, m.elem_bytes);
        profile_bytes(m.elem_bytes);
      } else
        std::memset(dst, 0, m.elem_bytes);          // out of the tensor: zero fill
      mark_pending(dst, m.elem_bytes, 0);
    }
}

// Land the TMA copies counted on this barrier (they complete_tx their bytes).
inline void land_all(Mbarrier& b, uint32_t off) {
  RuntimeScope scope;
  std::vector<PendingTma> tmas;
  tmas.swap(b.tmas);
  for (PendingTma& t : tmas) {
    land(t);
    b.tx -= int64_t(t.map.box_rows) * t.map.box_cols * t.map.elem_bytes;
    bar_progress(b, off);
  }
}

}  // namespace emu

inline uint32_t smem_u32(const void* p) { return emu::shared_offset(p, "the shared-memory address of a pointer (smem_u32)"); }

DITRON_EMU_API inline void mbar_init(uint64_t* bar, uint32_t count) {
  DITRON_EMU_HERE();
  if (reinterpret_cast<uintptr_t>(bar) % 8) emu::fail("mbarrier.init: the barrier is not 8-byte aligned");
  emu::Mbarrier b;
  b.count = count;
  b.pending = count;
  emu::hopper().bars[smem_u32(bar)] = b;
}

inline void mbar_init_fence() {}

DITRON_EMU_API inline void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  DITRON_EMU_HERE();
  emu::Mbarrier& b = emu::bar_at(bar, "mbarrier.arrive.expect_tx");
  if (b.pending == 0) emu::fail("mbarrier.arrive.expect_tx on a barrier whose phase has all its arrivals");
  b.tx += bytes;
  --b.pending;
  emu::bar_progress(b, smem_u32(bar));
}

DITRON_EMU_API inline void mbar_arrive(uint64_t* bar) {
  DITRON_EMU_HERE();
  emu::Mbarrier& b = emu::bar_at(bar, "mbarrier.arrive");
  if (b.pending == 0) emu::fail("mbarrier.arrive on a barrier whose phase has all its arrivals");
  --b.pending;
  emu::bar_progress(b, smem_u32(bar));
}

DITRON_EMU_API inline void mbar_wait(uint64_t* bar, uint32_t parity) {
  DITRON_EMU_HERE();
  const uint32_t off = smem_u32(bar);
  emu::bar_at(bar, "mbarrier.try_wait.parity");
  // the phase of parity P has completed when the completed phases' count differs in parity
  auto done = [off, parity] {
    emu::Mbarrier& b = emu::hopper().bars.at(off);
    emu::land_all(b, off);
    return (b.phase & 1) != (parity & 1);
  };
  emu::wait_until(done, [off, parity] {
    const emu::Mbarrier& b = emu::hopper().bars.at(off);
    return "the mbarrier at shared offset " + std::to_string(off) + " to complete its phase of parity " +
           std::to_string(parity) + " (" + std::to_string(b.pending) + " arrivals and " + std::to_string(b.tx) +
           " bytes missing)";
  });
}

DITRON_EMU_API inline void tma_load_2d(void* dst, const CUtensorMap* map, int32_t c0, int32_t c1, uint64_t* bar) {
  DITRON_EMU_HERE();
  const uint32_t off = smem_u32(dst);
  if (off % 128) emu::fail("cp.async.bulk.tensor: the shared destination is not 128-byte aligned");
  emu::Mbarrier& b = emu::bar_at(bar, "cp.async.bulk.tensor");
  const uint32_t bytes = map->box_rows * map->box_cols * map->elem_bytes;
  unsigned char* first = emu::shared_at(off, bytes, "cp.async.bulk.tensor");
  std::memset(first, emu::POISON, bytes);   // not landed yet
  emu::mark_pending(first, bytes, emu::PENDING_TMA);
  b.tmas.push_back({static_cast<unsigned char*>(dst), off, *map, c0, c1});
}

inline uint64_t wgmma_desc_k128(const void* p) {
  // as csrc/ditron/hopper.h builds it
  const uint64_t addr = smem_u32(p);
  uint64_t d = (addr & 0x3FFFF) >> 4;
  d |= ((uint64_t)(16 >> 4)) << 16;
  d |= ((uint64_t)(1024 >> 4)) << 32;
  d |= 1ull << 62;
  return d;
}

namespace emu {

// Byte offset of element (row, k) of a K-major operand of 16-bit elements that a
// descriptor describes (128-byte swizzle: rows of 128 bytes, groups of 8 rows SBO apart).
inline uint64_t operand_offset(uint64_t desc, int row, int k) {
  const uint64_t start = (desc & 0x3FFF) << 4, sbo = ((desc >> 32) & 0x3FFF) << 4;
  return swizzle128(start + uint64_t(row / 8) * sbo + uint64_t(row % 8) * 128 + uint64_t(k) * 2);
}

inline void check_desc(uint64_t desc, const char* which) {
  const unsigned mode = unsigned(desc >> 62), base = unsigned((desc >> 49) & 7);
  if (mode != 1)
    fail(std::string("wgmma: the ") + which + " descriptor's swizzle mode is " + std::to_string(mode) +
         "; the emulator models the 128-byte swizzle (mode 1), which ditron's tiles use");
  if (base != 0) fail(std::string("wgmma: the ") + which + " descriptor's base offset is not 0 (not modelled)");
}

template <class T> float element(uint64_t off) {
  T v;
  const unsigned char* p = shared_at(off, 2, "wgmma operand");
  check_async_read(p, 2, "wgmma.mma_async");
  std::memcpy(&v, p, 2);
  return static_cast<float>(v);
}

inline void run_wgmma(const HopperState::Op& op) {
  profile_flops(uint64_t(2) * 64 * op.n * 16);
  check_desc(op.a, "A");
  check_desc(op.b, "B");
  std::vector<float> A(64 * 16), B(size_t(op.n) * 16);
  for (int m = 0; m < 64; ++m)
    for (int k = 0; k < 16; ++k)
      A[m * 16 + k] = op.bf16 ? element<bfloat16>(operand_offset(op.a, m, k)) : element<half>(operand_offset(op.a, m, k));
  for (int n = 0; n < op.n; ++n)
    for (int k = 0; k < 16; ++k)
      B[n * 16 + k] = op.bf16 ? element<bfloat16>(operand_offset(op.b, n, k)) : element<half>(operand_offset(op.b, n, k));
  for (int t = 0; t < 128; ++t) {
    const int w = t / 32, l = t % 32;
    for (int j = 0; j < op.n / 8; ++j)
      for (int e = 0; e < 4; ++e) {
        const int row = 16 * w + l / 4 + 8 * (e / 2), col = 8 * j + 2 * (l % 4) + e % 2;
        float acc = op.acc[t][4 * j + e];
        for (int k = 0; k < 16; ++k) acc += A[row * 16 + k] * B[col * 16 + k];
        op.acc[t][4 * j + e] = acc;
      }
  }
}

struct WgmmaArg { float* d; uint64_t a, b; };
template <int N, bool BF16> void wgmma_all(void* const* args, int lanes) {
  if (lanes < 128) fail("wgmma.mma_async in a warpgroup of " + std::to_string(lanes) + " threads (it needs 128)");
  HopperState::Op op{static_cast<WgmmaArg*>(args[0])->a, static_cast<WgmmaArg*>(args[0])->b, N, BF16, {}};
  for (int t = 0; t < 128; ++t) {
    const WgmmaArg& x = *static_cast<WgmmaArg*>(args[t]);
    if (x.a != op.a || x.b != op.b)
      fail("wgmma.mma_async: thread " + std::to_string(t) + " of the warpgroup gives other descriptors than thread 0");
    op.acc[t] = x.d;
  }
  auto& groups = hopper().groups[self().linear / 128];
  if (groups.empty()) groups.emplace_back();
  groups.back().push_back(op);
}

inline void wgmma_commit_all(void* const*, int) {
  auto& groups = hopper().groups[self().linear / 128];
  if (groups.empty()) groups.emplace_back();
  groups.emplace_back();          // the committed group stays; a new one opens
}

template <int N> void wgmma_wait_all(void* const*, int) {
  auto& groups = hopper().groups[self().linear / 128];
  const int committed = groups.empty() ? 0 : static_cast<int>(groups.size()) - 1;
  for (int g = 0; g < committed - N; ++g)
    for (const HopperState::Op& op : groups[g]) run_wgmma(op);
  if (committed > N) groups.erase(groups.begin(), groups.begin() + (committed - N));
}

}  // namespace emu

inline void wgmma_fence() {}
DITRON_EMU_API inline void wgmma_commit() {
  DITRON_EMU_HERE();
  emu::group_collective(128, "wgmma.commit_group", emu::wgmma_commit_all, nullptr);
}
template <int N> DITRON_EMU_API inline void wgmma_wait() {
  DITRON_EMU_HERE();
  emu::group_collective(128, "wgmma.wait_group", emu::wgmma_wait_all<N>, nullptr);
}

template <int N, class T> DITRON_EMU_API inline void wgmma_m64nNk16(float* d, uint64_t desc_a, uint64_t desc_b) {
  DITRON_EMU_HERE();
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma_m64nNk16<N, T>: N must be a multiple of 8 in [8, 256]");
  static_assert(std::is_same<T, half>::value || std::is_same<T, bfloat16>::value, "T: half or bfloat16");
  emu::WgmmaArg x{d, desc_a, desc_b};
  emu::group_collective(128, "wgmma.mma_async", emu::wgmma_all<N, std::is_same<T, bfloat16>::value>, &x);
}

// Host: what ditron::make_tma_2d checks, into the emulator's map.
inline int make_tma_2d_emulated(const void* base, CUtensorMapDataType type, uint64_t rows, uint64_t cols,
                                uint32_t box_rows, uint32_t box_cols, CUtensorMap* out, std::string* error) {
  (void)type;
  if ((cols * 2) % 16 != 0) {
    *error = "rows must be a multiple of 16 bytes for TMA";
    return 1;
  }
  if (box_cols * 2 > 128) {
    *error = "a box row of more than 128 bytes cannot use the 128-byte swizzle";
    return 1;
  }
  if (reinterpret_cast<uintptr_t>(base) % 16) {
    *error = "the tensor is not 16-byte aligned (TMA needs it)";
    return 1;
  }
  *out = CUtensorMap{static_cast<const unsigned char*>(base), rows, cols, box_rows, box_cols, 2};
  return 0;
}

}  // namespace ditron
