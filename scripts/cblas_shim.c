/* The three BLAS functions libmlx.so takes from its BLAS (cblas_sgemm, cblas_dgemm, cblas_cgemm; see
 * `nm -D --undefined-only libmlx.so`), forwarded to an OpenBLAS opened privately (RTLD_LOCAL).
 *
 * scripts/cpu_blas.py loads this library with RTLD_GLOBAL before mlx is imported, so libmlx binds these
 * three names here, while OpenBLAS's other exports (sgemm_, dgemm_, ...) stay out of the process's global
 * scope: torch, imported before or after, keeps its own sgemm_. Built by `python scripts/build_cblas_shim.py`
 * (./setup_mlx.sh runs it):  cc -O2 -shared -fPIC cblas_shim.c -o libtrocr_mlx_cblas.so -ldl
 */
#include <dlfcn.h>

typedef void (*gemm_s)(int, int, int, int, int, int, float, const float *, int, const float *, int, float,
                       float *, int);
typedef void (*gemm_d)(int, int, int, int, int, int, double, const double *, int, const double *, int,
                       double, double *, int);
typedef void (*gemm_c)(int, int, int, int, int, int, const void *, const void *, int, const void *, int,
                       const void *, void *, int);

static gemm_s openblas_sgemm;
static gemm_d openblas_dgemm;
static gemm_c openblas_cgemm;

/* Open the OpenBLAS at `path`; 0 on success, -1 when it cannot be opened, -2 when a function is missing. */
int trocr_cblas_open(const char *path) {
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) return -1;
    openblas_sgemm = (gemm_s)dlsym(lib, "cblas_sgemm");
    openblas_dgemm = (gemm_d)dlsym(lib, "cblas_dgemm");
    openblas_cgemm = (gemm_c)dlsym(lib, "cblas_cgemm");
    return openblas_sgemm && openblas_dgemm && openblas_cgemm ? 0 : -2;
}

/* CBLAS enums (order, transpose) are passed as ints in the C ABI. */
void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
    openblas_sgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cblas_dgemm(int order, int ta, int tb, int m, int n, int k, double alpha, const double *a, int lda,
                 const double *b, int ldb, double beta, double *c, int ldc) {
    openblas_dgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cblas_cgemm(int order, int ta, int tb, int m, int n, int k, const void *alpha, const void *a, int lda,
                 const void *b, int ldb, const void *beta, void *c, int ldc) {
    openblas_cgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
