// The emulated GPU's nvshmemx.h: all of it is in nvshmem.h.
#pragma once
#include "nvshmem.h"
