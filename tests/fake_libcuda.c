/* A stand-in for libcuda.so.1 with the entry points ditron's NVRTC path calls.
 * It records every launch (function, grid, block, shared memory, stream and the
 * first 8 bytes behind each parameter pointer) so that tests without a GPU can
 * check what the host side of a launch passes to the driver.
 * Built by tests/test_cuda_launch.py; used through DITRON_LIBCUDA. */
#include <stdint.h>
#include <string.h>

#define MAX_LAUNCHES 16
#define MAX_PARAMS 16

struct launch {
  uintptr_t fn;
  unsigned grid[3], block[3], smem;
  uintptr_t stream;
  uint64_t params[MAX_PARAMS];
};

static struct launch launches[MAX_LAUNCHES];
static int n_launches, n_params, n_syncs, fail_code;
static char names[MAX_LAUNCHES][64];
static int n_names;

int cuInit(unsigned flags) { (void)flags; return 0; }
int cuCtxGetCurrent(void** ctx) { *ctx = (void*)0x10; return 0; }
int cuDeviceGet(int* dev, int ordinal) { *dev = ordinal; return 0; }
int cuDevicePrimaryCtxRetain(void** ctx, int dev) { (void)dev; *ctx = (void*)0x10; return 0; }
int cuCtxSetCurrent(void* ctx) { (void)ctx; return 0; }
int cuModuleLoadData(void** mod, const void* image) { (void)image; *mod = (void*)0x20; return 0; }
int cuFuncSetAttribute(void* fn, int attr, int value) { (void)fn; (void)attr; (void)value; return 0; }

/* Function handles are 0x1000 + the order in which their names were looked up. */
int cuModuleGetFunction(void** fn, void* mod, const char* name) {
  (void)mod;
  if (n_names >= MAX_LAUNCHES) return 500; /* CUDA_ERROR_NOT_FOUND */
  strncpy(names[n_names], name, 63);
  *fn = (void*)(uintptr_t)(0x1000 + n_names);
  ++n_names;
  return 0;
}

int cuGetErrorString(int rc, const char** text) {
  *text = rc == 700 ? "an illegal memory access was encountered" : "unknown error";
  return 0;
}

int cuStreamSynchronize(void* stream) {
  (void)stream;
  ++n_syncs;
  return fail_code;
}

int cuLaunchKernel(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned smem, void* stream, void** params, void** extra) {
  (void)extra;
  if (n_launches >= MAX_LAUNCHES) return 1;
  struct launch* l = &launches[n_launches++];
  l->fn = (uintptr_t)fn;
  l->grid[0] = gx; l->grid[1] = gy; l->grid[2] = gz;
  l->block[0] = bx; l->block[1] = by; l->block[2] = bz;
  l->smem = smem;
  l->stream = (uintptr_t)stream;
  for (int i = 0; i < n_params && i < MAX_PARAMS; ++i) memcpy(&l->params[i], params[i], 8);
  return 0;
}

/* Test controls: reset before a module is first run (its functions are looked up then). */
void fake_reset(int params_per_launch, int fail) {
  n_launches = 0; n_syncs = 0; n_names = 0; n_params = params_per_launch; fail_code = fail;
  memset(launches, 0, sizeof(launches));
}
int fake_launches(void) { return n_launches; }
int fake_syncs(void) { return n_syncs; }
const char* fake_name(int i) { return i < n_names ? names[i] : ""; }
/* out: fn, grid x3, block x3, smem, stream, params... */
void fake_launch(int i, uint64_t* out) {
  const struct launch* l = &launches[i];
  out[0] = l->fn;
  for (int d = 0; d < 3; ++d) { out[1 + d] = l->grid[d]; out[4 + d] = l->block[d]; }
  out[7] = l->smem;
  out[8] = l->stream;
  for (int p = 0; p < MAX_PARAMS; ++p) out[9 + p] = l->params[p];
}
