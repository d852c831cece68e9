/*
 * A counting stand-in for the CUDA driver (libcuda.so.1), for tests on
 * machines without a GPU. It implements the driver calls the runtime makes
 * through cudarc, with host memory standing in for device memory:
 * allocations are malloc, copies and memsets are real, kernel launches do
 * nothing (their outputs are not meaningful; what is tested is the host
 * side: which buffers the runtime allocates, frees and copies, per frame).
 *
 * It reports one device, "counting driver", of compute capability
 * STREAMFUSE_SHIM_CC (default 90). Modules must be a cubin (ELF) or PTX
 * text, and a function must be named in its module.
 *
 * Environment:
 *   STREAMFUSE_SHIM_LOG   file to which each device-to-host copy (one per
 *                         frame in the runtime's lanes) appends a line of
 *                         the running totals:
 *                         "dtoh bytes=N device_allocs=A device_frees=F
 *                          pinned_allocs=P pinned_frees=Q launches=L"
 *   STREAMFUSE_SHIM_FAIL  "module_load": every module load fails with
 *                         CUDA_ERROR_UNSUPPORTED_PTX_VERSION (as under a
 *                         driver too old for the compiled code).
 *
 * Build: cc -shared -fPIC -O1 -o libcuda.so.1 counting_driver.c -lpthread
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext;
typedef void *CUstream;
typedef void *CUevent;
typedef void *CUmodule;
typedef void *CUfunction;

enum {
    SUCCESS = 0,
    ERR_INVALID_VALUE = 1,
    ERR_OUT_OF_MEMORY = 2,
    ERR_INVALID_DEVICE = 101,
    ERR_INVALID_IMAGE = 200,
    ERR_UNSUPPORTED_PTX_VERSION = 222,
    ERR_NOT_FOUND = 500,
    ERR_NOT_SUPPORTED = 801,
};

static uint64_t device_allocs, device_frees, pinned_allocs, pinned_frees, launches;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int context_token;

static void bump(uint64_t *c) { __atomic_add_fetch(c, 1, __ATOMIC_SEQ_CST); }
static uint64_t get(uint64_t *c) { return __atomic_load_n(c, __ATOMIC_SEQ_CST); }

static int capability(void) {
    const char *cc = getenv("STREAMFUSE_SHIM_CC");
    int v = cc ? atoi(cc) : 90;
    return v > 0 ? v : 90;
}

CUresult cuInit(unsigned flags) { (void)flags; return SUCCESS; }
/* NVRTC looks this up in the driver when it is loaded; it has no tables. */
CUresult cuGetExportTable(const void **table, const void *id) {
    (void)id;
    *table = NULL;
    return ERR_NOT_SUPPORTED;
}
CUresult cuDriverGetVersion(int *v) { *v = 12090; return SUCCESS; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return SUCCESS; }
CUresult cuDeviceGet(CUdevice *d, int ordinal) {
    if (ordinal != 0) return ERR_INVALID_DEVICE;
    *d = 0;
    return SUCCESS;
}
CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
    (void)d;
    if (len <= 0) return ERR_INVALID_VALUE;
    snprintf(name, (size_t)len, "counting driver");
    return SUCCESS;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d) {
    (void)d;
    *bytes = (size_t)16 << 30;
    return SUCCESS;
}
CUresult cuDeviceGetAttribute(int *v, int attr, CUdevice d) {
    (void)d;
    switch (attr) {
    case 1: *v = 1024; break;            /* max threads per block */
    case 8: *v = 48 * 1024; break;       /* shared memory per block */
    case 10: *v = 32; break;             /* warp size */
    case 16: *v = 80; break;             /* multiprocessors */
    case 75: *v = capability() / 10; break;
    case 76: *v = capability() % 10; break;
    case 115: *v = 1; break;             /* memory pools supported */
    default: *v = 0; break;
    }
    return SUCCESS;
}
CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) {
    (void)d;
    *c = &context_token;
    return SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { (void)d; return SUCCESS; }
CUresult cuCtxSetCurrent(CUcontext c) { (void)c; return SUCCESS; }
CUresult cuCtxGetCurrent(CUcontext *c) { *c = &context_token; return SUCCESS; }
CUresult cuCtxSynchronize(void) { return SUCCESS; }

CUresult cuStreamCreate(CUstream *s, unsigned flags) {
    (void)flags;
    *s = malloc(1);
    return *s ? SUCCESS : ERR_OUT_OF_MEMORY;
}
CUresult cuStreamCreateWithPriority(CUstream *s, unsigned flags, int priority) {
    (void)priority;
    return cuStreamCreate(s, flags);
}
CUresult cuStreamDestroy_v2(CUstream s) { free(s); return SUCCESS; }
CUresult cuStreamSynchronize(CUstream s) { (void)s; return SUCCESS; }
CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned f) { (void)s; (void)e; (void)f; return SUCCESS; }

CUresult cuEventCreate(CUevent *e, unsigned flags) {
    (void)flags;
    *e = malloc(1);
    return *e ? SUCCESS : ERR_OUT_OF_MEMORY;
}
CUresult cuEventRecord(CUevent e, CUstream s) { (void)e; (void)s; return SUCCESS; }
CUresult cuEventSynchronize(CUevent e) { (void)e; return SUCCESS; }
CUresult cuEventQuery(CUevent e) { (void)e; return SUCCESS; }
CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b) { (void)a; (void)b; *ms = 0.001f; return SUCCESS; }
CUresult cuEventElapsedTime_v2(float *ms, CUevent a, CUevent b) { return cuEventElapsedTime(ms, a, b); }
CUresult cuEventDestroy_v2(CUevent e) { free(e); return SUCCESS; }

/* Device memory: host memory, zeroed (as a fresh cudaMalloc is not, but
 * every kernel writes its output before it is read). */
static CUresult device_alloc(CUdeviceptr *p, size_t n) {
    void *m = calloc(n ? n : 1, 1);
    if (!m) return ERR_OUT_OF_MEMORY;
    bump(&device_allocs);
    *p = (CUdeviceptr)(uintptr_t)m;
    return SUCCESS;
}
static CUresult device_free(CUdeviceptr p) {
    bump(&device_frees);
    free((void *)(uintptr_t)p);
    return SUCCESS;
}
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) { return device_alloc(p, n); }
CUresult cuMemAllocAsync(CUdeviceptr *p, size_t n, CUstream s) { (void)s; return device_alloc(p, n); }
CUresult cuMemFree_v2(CUdeviceptr p) { return device_free(p); }
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) { (void)s; return device_free(p); }
CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total) {
    *free_b = (size_t)15 << 30;
    *total = (size_t)16 << 30;
    return SUCCESS;
}
CUresult cuMemHostAlloc(void **p, size_t n, unsigned flags) {
    (void)flags;
    *p = calloc(n ? n : 1, 1);
    if (!*p) return ERR_OUT_OF_MEMORY;
    bump(&pinned_allocs);
    return SUCCESS;
}
CUresult cuMemFreeHost(void *p) { bump(&pinned_frees); free(p); return SUCCESS; }

static void log_frame(size_t bytes) {
    const char *path = getenv("STREAMFUSE_SHIM_LOG");
    if (!path) return;
    pthread_mutex_lock(&log_lock);
    FILE *f = fopen(path, "a");
    if (f) {
        fprintf(f,
                "dtoh bytes=%zu device_allocs=%llu device_frees=%llu pinned_allocs=%llu "
                "pinned_frees=%llu launches=%llu\n",
                bytes, (unsigned long long)get(&device_allocs),
                (unsigned long long)get(&device_frees), (unsigned long long)get(&pinned_allocs),
                (unsigned long long)get(&pinned_frees), (unsigned long long)get(&launches));
        fclose(f);
    }
    pthread_mutex_unlock(&log_lock);
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *h, size_t n) {
    memcpy((void *)(uintptr_t)d, h, n);
    return SUCCESS;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *h, size_t n, CUstream s) {
    (void)s;
    return cuMemcpyHtoD_v2(d, h, n);
}
CUresult cuMemcpyDtoH_v2(void *h, CUdeviceptr d, size_t n) {
    memcpy(h, (const void *)(uintptr_t)d, n);
    log_frame(n);
    return SUCCESS;
}
CUresult cuMemcpyDtoHAsync_v2(void *h, CUdeviceptr d, size_t n, CUstream s) {
    (void)s;
    return cuMemcpyDtoH_v2(h, d, n);
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr a, CUdeviceptr b, size_t n) {
    memmove((void *)(uintptr_t)a, (const void *)(uintptr_t)b, n);
    return SUCCESS;
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr a, CUdeviceptr b, size_t n, CUstream s) {
    (void)s;
    return cuMemcpyDtoD_v2(a, b, n);
}
CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) {
    memset((void *)(uintptr_t)d, v, n);
    return SUCCESS;
}
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream s) {
    (void)s;
    return cuMemsetD8_v2(d, v, n);
}

/* Modules: a copy of the image, which must be a cubin (ELF) or PTX. */
typedef struct {
    char *image;
    size_t len;
} module_t;

static size_t elf_len(const unsigned char *p) {
    /* ELF64: the section header table is the file's last part. */
    uint64_t shoff;
    uint16_t shentsize, shnum;
    memcpy(&shoff, p + 0x28, 8);
    memcpy(&shentsize, p + 0x3a, 2);
    memcpy(&shnum, p + 0x3c, 2);
    return (size_t)(shoff + (uint64_t)shentsize * shnum);
}

CUresult cuModuleLoadData(CUmodule *m, const void *image) {
    const char *fail = getenv("STREAMFUSE_SHIM_FAIL");
    if (fail && strcmp(fail, "module_load") == 0) return ERR_UNSUPPORTED_PTX_VERSION;
    const unsigned char *p = image;
    size_t len;
    if (memcmp(p, "\177ELF", 4) == 0 && p[4] == 2)
        len = elf_len(p);
    else if (strstr((const char *)p, ".version") && strstr((const char *)p, ".target"))
        len = strlen((const char *)p) + 1;
    else
        return ERR_INVALID_IMAGE;
    module_t *mod = malloc(sizeof *mod);
    if (!mod) return ERR_OUT_OF_MEMORY;
    mod->image = malloc(len);
    if (!mod->image) { free(mod); return ERR_OUT_OF_MEMORY; }
    memcpy(mod->image, p, len);
    mod->len = len;
    *m = mod;
    return SUCCESS;
}
CUresult cuModuleUnload(CUmodule m) {
    module_t *mod = m;
    free(mod->image);
    free(mod);
    return SUCCESS;
}
CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name) {
    module_t *mod = m;
    size_t n = strlen(name);
    if (n == 0 || !memmem(mod->image, mod->len, name, n)) return ERR_NOT_FOUND;
    *f = mod;
    return SUCCESS;
}
CUresult cuFuncGetAttribute(int *v, int attr, CUfunction f) { (void)attr; (void)f; *v = 0; return SUCCESS; }
CUresult cuFuncSetAttribute(CUfunction f, int attr, int v) { (void)f; (void)attr; (void)v; return SUCCESS; }
CUresult cuFuncSetCacheConfig(CUfunction f, int c) { (void)f; (void)c; return SUCCESS; }

CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params,
                        void **extra) {
    (void)f; (void)shmem; (void)s; (void)params; (void)extra;
    if (!gx || !gy || !gz || !bx || !by || !bz || (uint64_t)bx * by * bz > 1024)
        return ERR_INVALID_VALUE;
    bump(&launches);
    return SUCCESS;
}

CUresult cuGetErrorName(CUresult e, const char **s) {
    switch (e) {
    case SUCCESS: *s = "CUDA_SUCCESS"; break;
    case ERR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    case ERR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case ERR_INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
    case ERR_INVALID_IMAGE: *s = "CUDA_ERROR_INVALID_IMAGE"; break;
    case ERR_UNSUPPORTED_PTX_VERSION: *s = "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"; break;
    case ERR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
    case ERR_NOT_SUPPORTED: *s = "CUDA_ERROR_NOT_SUPPORTED"; break;
    default: *s = "CUDA_ERROR_UNKNOWN"; break;
    }
    return SUCCESS;
}
CUresult cuGetErrorString(CUresult e, const char **s) {
    switch (e) {
    case ERR_UNSUPPORTED_PTX_VERSION:
        *s = "the provided PTX was compiled with an unsupported toolchain.";
        return SUCCESS;
    default:
        return cuGetErrorName(e, s);
    }
}
