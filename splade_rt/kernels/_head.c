/* The certified-screen SPLADE head as one CPU kernel (AVX-512 VNNI), for the native variants.
 *
 * Same maths as kernels/screening.py (the ONNX screened graph), without what stock ONNX ops force:
 *   - the int8 products never leave registers: each 32-entry vocab tile x 8-token tile is reduced
 *     to its max right after the dot products, so no [vocab, tokens] int32 tile is written and read
 *     back by a separate ReduceMax;
 *   - the weights are packed once at load (onnxruntime's MatMulInteger packs its constant operand
 *     again on every call, which is much of a batch-1 query's screen);
 *   - the bound and the candidate test run per tile, the exact fp32 pass per row over its candidates
 *     only, and the non-zeros come out as CSR: no [batch, vocab] array is scanned.
 * The result is exact: entries whose certified upper bound is > 0 are recomputed in fp32 over the
 * row's tokens; the others are provably <= 0, i.e. 0 after relu.
 *
 * Tokens go in as uint8 (int8 + 128), the operand vpdpbusd takes unsigned; the weights' row sums
 * times 128 are subtracted back (integer arithmetic: exact).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define VT 32 /* vocab entries per tile: two 16-lane int32 accumulators */
#define TT 8 /* tokens per tile: 16 accumulators, 2 weight and 2 max registers (12 tokens ran no faster) */
/* the transposed states' row stride: S padded to 16 floats, an odd number of cache lines, so that
 * the exact pass's column walk does not map every hidden dim onto the same few L1 sets */
#define XSTRIDE(S) ((((S) + 15) / 16 | 1) * 16)

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <pthread.h>
#define SPLADE_X86 1
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vnni")))
#else
#define SPLADE_X86 0
#endif

static int cpu_supported(void) {
#if SPLADE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

/* per row: the real tokens' states transposed for the exact pass ([H][XSTRIDE], the count padded to a
 * multiple of 16 with copies of the last real token: the max is unchanged), the centred tokens
 * quantized (uint8, [S][K]), and the bound's terms. Error terms in double, rounded up when stored:
 * a bound stays a bound. */
static void prepare_rows(const float *states, const int64_t *mask, Py_ssize_t B, Py_ssize_t S, Py_ssize_t H,
                         Py_ssize_t K, const float *center, uint8_t *tok, float *xt, int32_t *counts, float *stats) {
    Py_ssize_t S16 = XSTRIDE(S);
    for (Py_ssize_t r = 0; r < B; r++) {
        const float *hr = states + r * S * H;
        float *xr = xt + r * S16 * H;
        uint8_t *tr = tok + r * S * K;
        int32_t n = 0;
        float amax = 0.0f;
        for (Py_ssize_t t = 0; t < S; t++) {
            if (!mask[r * S + t]) continue;
            for (Py_ssize_t h = 0; h < H; h++) {
                xr[h * S16 + n] = hr[t * H + h];
                float a = fabsf(hr[t * H + h] - center[h]); /* one fp32 Sub, as the bound assumes */
                if (a > amax) amax = a;
            }
            n++;
        }
        counts[r] = n;
        if (n == 0) {
            stats[r * 3] = stats[r * 3 + 1] = stats[r * 3 + 2] = 0.0f;
            continue;
        }
        for (Py_ssize_t h = 0; h < H; h++)
            for (Py_ssize_t t = n; t < (n + 15) / 16 * 16; t++) xr[h * S16 + t] = xr[h * S16 + n - 1];
        float scale = (amax > 1e-30f ? amax : 1e-30f) / 127.0f;
        double h1 = 0.0, dh = 0.0;
        for (int32_t t = 0; t < n; t++) {
            double sum = 0.0;
            uint8_t *q = tr + (Py_ssize_t)t * K;
            for (Py_ssize_t h = 0; h < H; h++) {
                float x = xr[h * S16 + t] - center[h];
                float v = nearbyintf(x / scale);
                v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
                q[h] = (uint8_t)((int)v + 128);
                double err = fabs((double)x - (double)v * (double)scale);
                if (err > dh) dh = err;
                sum += fabs((double)x);
            }
            for (Py_ssize_t h = H; h < K; h++) q[h] = 128; /* zero after the offset; the weights are 0 there too */
            if (sum > h1) h1 = sum;
        }
        float h1f = (float)h1, dhf = (float)dh;
        if ((double)h1f < h1) h1f = nextafterf(h1f, INFINITY);
        if ((double)dhf < dh) dhf = nextafterf(dhf, INFINITY);
        stats[r * 3] = scale;
        stats[r * 3 + 1] = h1f;
        stats[r * 3 + 2] = dhf;
    }
}

#if SPLADE_X86
/* max over tokens of the 32 tile entries' int32 dot products (uint8 tokens x int8 weights), over
 * `tiles` runs of T tokens. The running max stays in registers across the runs (kept in memory, each
 * run's max would wait on the previous run's store). The accumulators are named variables, written
 * out by REP<T>, not an array: GCC keeps an array of vectors in memory, a store per dot product. */
typedef int32_t unaligned_i32 __attribute__((may_alias, aligned(1))); /* 4 token bytes as one lane */
#define REP1(X) X(0)
#define REP2(X) REP1(X) X(1)
#define REP3(X) REP2(X) X(2)
#define REP4(X) REP3(X) X(3)
#define REP5(X) REP4(X) X(4)
#define REP6(X) REP5(X) X(5)
#define REP7(X) REP6(X) X(6)
#define REP8(X) REP7(X) X(7)
/* acc += u8 a . s8 b, in place. With the intrinsic GCC 12 copies each accumulator to another register
 * and back every step, twice as many moves as dot products: the front end, not the multipliers, set
 * the pace. */
#define DPBUSD(acc, a, b) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b))
#define ACC_ZERO(t) __m512i a0_##t = _mm512_setzero_si512(), a1_##t = a0_##t;
#define ACC_STEP(t)                                                                                          \
    {                                                                                                        \
        __m512i b = _mm512_set1_epi32(*(const unaligned_i32 *)(tb + (t) * K + 4 * k));                      \
        DPBUSD(a0_##t, b, w0);                                                                               \
        DPBUSD(a1_##t, b, w1);                                                                               \
    }
#define ACC_MAX(t)                                                                                           \
    m0 = _mm512_max_epi32(m0, a0_##t);                                                                       \
    m1 = _mm512_max_epi32(m1, a1_##t);
#define TILE_MAX(T)                                                                                          \
    AVX512 static void tile_max_##T(const int8_t *w, const uint8_t *tb, Py_ssize_t tiles, Py_ssize_t K,      \
                                    __m512i *max0, __m512i *max1) {                                          \
        __m512i m0 = *max0, m1 = *max1;                                                                      \
        for (; tiles > 0; tiles--, tb += (T) * K) {                                                          \
            REP##T(ACC_ZERO)                                                                                 \
            for (Py_ssize_t k = 0; k < K / 4; k++) {                                                         \
                __m512i w0 = _mm512_loadu_si512(w + k * 128), w1 = _mm512_loadu_si512(w + k * 128 + 64);     \
                REP##T(ACC_STEP)                                                                             \
            }                                                                                                \
            REP##T(ACC_MAX)                                                                                  \
        }                                                                                                    \
        *max0 = m0;                                                                                          \
        *max1 = m1;                                                                                          \
    }
TILE_MAX(1) TILE_MAX(2) TILE_MAX(3) TILE_MAX(4) TILE_MAX(5) TILE_MAX(6) TILE_MAX(7) TILE_MAX(8)
typedef void (*tile_fn)(const int8_t *, const uint8_t *, Py_ssize_t, Py_ssize_t, __m512i *, __m512i *);
static const tile_fn TILES[TT + 1] = {NULL,       tile_max_1, tile_max_2, tile_max_3, tile_max_4,
                                      tile_max_5, tile_max_6, tile_max_7, tile_max_8};

/* the max over the row's n tokens: whole tiles of TT tokens with the maxima in registers, then the rest */
AVX512 static inline void tile_max(const int8_t *w, const uint8_t *tok, int32_t n, Py_ssize_t K, int32_t *out) {
    __m512i m0 = _mm512_set1_epi32(INT32_MIN), m1 = m0;
    int32_t full = n / TT, rest = n - full * TT;
    if (full) TILES[TT](w, tok, full, K, &m0, &m1);
    if (rest) TILES[rest](w, tok + (Py_ssize_t)full * TT * K, 1, K, &m0, &m1);
    _mm512_storeu_si512(out, m0);
    _mm512_storeu_si512(out + 16, m1);
}

/* the exact max over tokens [begin, end) of h . w in fp32, for four candidates w0..w3 at once (best[c]
 * is raised to it). The row's states are transposed ([H][stride], the token count padded to a
 * multiple of 16 with copies of the last token): 16 tokens per vector, no horizontal sum per token.
 * Four candidates x four token vectors share their loads: 8 loads per 16 FMAs, FMA-bound. */
#define EX_ZERO(c, j) __m512 e##c##j = _mm512_setzero_ps();
#define EX_FMA(c, j) e##c##j = _mm512_fmadd_ps(x##j, v##c, e##c##j);
#define EX_FOUR(X, c) X(c, 0) X(c, 1) X(c, 2) X(c, 3)
#define EX_ALL(X) EX_FOUR(X, 0) EX_FOUR(X, 1) EX_FOUR(X, 2) EX_FOUR(X, 3)
#define EX_MAX(c) m##c = _mm512_max_ps(m##c, _mm512_max_ps(_mm512_max_ps(e##c##0, e##c##1), \
                                                           _mm512_max_ps(e##c##2, e##c##3)));
AVX512 static void exact_max4(const float *xt, Py_ssize_t stride, Py_ssize_t begin, Py_ssize_t end,
                              const float *const w[4], Py_ssize_t H, float best[4]) {
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    Py_ssize_t t0 = begin;
    for (; t0 + 64 <= end; t0 += 64) {
        EX_ALL(EX_ZERO)
        for (Py_ssize_t h = 0; h < H; h++) {
            const float *x = xt + h * stride + t0;
            __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16), x2 = _mm512_loadu_ps(x + 32),
                   x3 = _mm512_loadu_ps(x + 48);
            __m512 v0 = _mm512_set1_ps(w0[h]), v1 = _mm512_set1_ps(w1[h]), v2 = _mm512_set1_ps(w2[h]),
                   v3 = _mm512_set1_ps(w3[h]);
            EX_ALL(EX_FMA)
        }
        EX_MAX(0) EX_MAX(1) EX_MAX(2) EX_MAX(3)
    }
    for (; t0 < end; t0 += 16) {
        __m512 e0 = _mm512_setzero_ps(), e1 = e0, e2 = e0, e3 = e0;
        for (Py_ssize_t h = 0; h < H; h++) {
            __m512 x = _mm512_loadu_ps(xt + h * stride + t0);
            e0 = _mm512_fmadd_ps(x, _mm512_set1_ps(w0[h]), e0);
            e1 = _mm512_fmadd_ps(x, _mm512_set1_ps(w1[h]), e1);
            e2 = _mm512_fmadd_ps(x, _mm512_set1_ps(w2[h]), e2);
            e3 = _mm512_fmadd_ps(x, _mm512_set1_ps(w3[h]), e3);
        }
        m0 = _mm512_max_ps(m0, e0);
        m1 = _mm512_max_ps(m1, e1);
        m2 = _mm512_max_ps(m2, e2);
        m3 = _mm512_max_ps(m3, e3);
    }
    float x[4] = {_mm512_reduce_max_ps(m0), _mm512_reduce_max_ps(m1), _mm512_reduce_max_ps(m2),
                  _mm512_reduce_max_ps(m3)};
    for (int c = 0; c < 4; c++)
        if (x[c] > best[c]) best[c] = x[c];
}

AVX512 static Py_ssize_t screen_tiles(const uint8_t *tok, const float *xs, const int32_t *counts, const float *stats,
                                Py_ssize_t B, Py_ssize_t S, Py_ssize_t H, Py_ssize_t K, const int8_t *wpack,
                                const int32_t *wcorr, const float *wscale, const float *c0, const float *c1,
                                const float *bconst, const float *W, const float *bias, Py_ssize_t V,
                                Py_ssize_t vt0, Py_ssize_t vt1, int activation, int32_t *out_cols,
                                float *out_vals, int32_t *out_counts) {
    int32_t acc[VT];
    Py_ssize_t S16 = XSTRIDE(S), candidates = 0;
    int32_t *cols = malloc((vt1 - vt0) * VT * sizeof(int32_t));
    float *best = malloc((vt1 - vt0) * VT * sizeof(float));
    if (!cols || !best) {
        free(cols);
        free(best);
        return -1;
    }
    /* row by row: the row's tokens stay in L1 while the vocab tiles stream past them */
    for (Py_ssize_t r = 0; r < B; r++) {
        int32_t n = counts[r];
        out_counts[r] = 0;
        if (n == 0) continue;
        float scale = stats[r * 3], h1 = stats[r * 3 + 1], dh = stats[r * 3 + 2];
        Py_ssize_t found = 0;
        for (Py_ssize_t vt = vt0; vt < vt1; vt++) {
            tile_max(wpack + vt * K * VT, tok + r * S * K, n, K, acc);
            for (int half = 0; half < 2; half++) {
                Py_ssize_t v = vt * VT + half * 16;
                __m512i a = _mm512_sub_epi32(_mm512_loadu_si512(acc + half * 16), _mm512_loadu_si512(wcorr + v));
                /* upper = acc * (scale * wscale) + h1 * c0 + dh * c1 + bconst, as the graph's bound */
                __m512 up = _mm512_mul_ps(_mm512_cvtepi32_ps(a),
                                          _mm512_mul_ps(_mm512_set1_ps(scale), _mm512_loadu_ps(wscale + v)));
                __m512 terms = _mm512_fmadd_ps(_mm512_set1_ps(h1), _mm512_loadu_ps(c0 + v),
                                               _mm512_fmadd_ps(_mm512_set1_ps(dh), _mm512_loadu_ps(c1 + v),
                                                               _mm512_loadu_ps(bconst + v)));
                __mmask16 cand = _mm512_cmp_ps_mask(_mm512_add_ps(up, terms), _mm512_setzero_ps(), _CMP_GT_OQ);
                while (cand) {
                    Py_ssize_t col = v + __builtin_ctz(cand);
                    cand &= cand - 1;
                    if (col < V) cols[found++] = (int32_t)col;
                }
            }
        }
        /* exact pass: 64 tokens at a time (32 KiB at hidden 128, in L1) against every candidate */
        const float *xt = xs + r * S16 * H;
        Py_ssize_t n16 = (n + 15) / 16 * 16;
        for (Py_ssize_t i = 0; i < found; i++) best[i] = -INFINITY;
        for (Py_ssize_t t0 = 0; t0 < n16; t0 += 64) {
            Py_ssize_t t1 = t0 + 64 < n16 ? t0 + 64 : n16;
            for (Py_ssize_t i = 0; i < found; i += 4) { /* past the last candidate: the last one again */
                const float *w[4];
                float four[4];
                for (int c = 0; c < 4; c++) {
                    w[c] = W + (Py_ssize_t)cols[i + c < found ? i + c : found - 1] * H;
                    four[c] = i + c < found ? best[i + c] : -INFINITY;
                }
                exact_max4(xt, S16, t0, t1, w, H, four);
                for (int c = 0; c < 4 && i + c < found; c++) best[i + c] = four[c];
            }
        }
        /* the row's non-zeros, columns ascending, at row * span in the outputs */
        int32_t nnz = 0;
        for (Py_ssize_t i = 0; i < found; i++) {
            float x = best[i] + bias[cols[i]];
            if (x > 0.0f) {
                x = log1pf(x);
                if (activation == 1) x = log1pf(x);
                out_cols[r * (vt1 - vt0) * VT + nnz] = cols[i];
                out_vals[r * (vt1 - vt0) * VT + nnz] = x;
                nnz++;
            }
        }
        out_counts[r] = nnz;
        candidates += found;
    }
    free(cols);
    free(best);
    return candidates;
}
#endif

#if SPLADE_X86
/* one thread's share: a span of vocab tiles over every row, its non-zeros at row * span width */
typedef struct {
    const uint8_t *tok;
    const float *xs, *stats, *wscale, *c0, *c1, *bconst, *W, *bias;
    const int32_t *counts, *wcorr;
    const int8_t *wpack;
    Py_ssize_t B, S, H, K, V, vt0, vt1, candidates;
    int activation;
    int32_t *cols, *nnz;
    float *vals;
} Span;

static void *run_span(void *arg) {
    Span *p = arg;
    p->candidates = screen_tiles(p->tok, p->xs, p->counts, p->stats, p->B, p->S, p->H, p->K, p->wpack, p->wcorr,
                                 p->wscale, p->c0, p->c1, p->bconst, p->W, p->bias, p->V, p->vt0, p->vt1,
                                 p->activation, p->cols, p->vals, p->nnz);
    return NULL;
}
#endif

static int check_size(Py_buffer *b, Py_ssize_t items, Py_ssize_t itemsize, const char *name) {
    if (b->len < items * itemsize) {
        PyErr_Format(PyExc_ValueError, "_head: %s holds %zd bytes, %zd needed", name, b->len, items * itemsize);
        return 0;
    }
    return 1;
}

static PyObject *py_supported(PyObject *self, PyObject *args) { return PyBool_FromLong(cpu_supported()); }

/* run(states, mask, center, packed, correction, scale, coeff0, coeff1, const, weight, bias, B, S, H, K, V,
 *     activation, threads) -> (row counts int32, columns int32, values float32, candidates): the rows'
 * non-zeros in CSR order, columns ascending. threads split the vocab tiles (pthreads: a call's
 * hand-off costs tens of microseconds, which a batch-1 query can afford and a Python pool cannot). */
static PyObject *py_run(PyObject *self, PyObject *args) {
    Py_buffer states, mask, center, wpack, wcorr, wscale, c0, c1, bconst, W, bias;
    Py_ssize_t B, S, H, K, V;
    int activation, threads;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*y*y*y*nnnnnii", &states, &mask, &center, &wpack, &wcorr, &wscale,
                          &c0, &c1, &bconst, &W, &bias, &B, &S, &H, &K, &V, &activation, &threads))
        return NULL;
    PyObject *result = NULL;
    Py_buffer *all[] = {&states, &mask, &center, &wpack, &wcorr, &wscale, &c0, &c1, &bconst, &W, &bias};
    Py_ssize_t tiles = (V + VT - 1) / VT, Vp = tiles * VT;
    if (!cpu_supported()) {
        PyErr_SetString(PyExc_RuntimeError, "_head: this CPU has no AVX-512 VNNI");
        goto done;
    }
    if (B < 0 || S < 1 || H < 1 || K % 4 || K < H || V < 1 || threads < 1) {
        PyErr_SetString(PyExc_ValueError, "_head: bad shapes");
        goto done;
    }
    if (!(check_size(&states, B * S * H, 4, "states") && check_size(&mask, B * S, 8, "mask") &&
          check_size(&center, H, 4, "center") && check_size(&wpack, Vp * K, 1, "packed weights") &&
          check_size(&wcorr, Vp, 4, "weight sums") && check_size(&wscale, Vp, 4, "weight scales") &&
          check_size(&c0, Vp, 4, "bound coefficients") && check_size(&c1, Vp, 4, "bound coefficients") &&
          check_size(&bconst, Vp, 4, "bound constants") && check_size(&W, V * H, 4, "weights") &&
          check_size(&bias, V, 4, "bias")))
        goto done;
#if SPLADE_X86
    {
        Py_ssize_t parts = threads < tiles ? threads : tiles, total = 0, candidates = 0;
        uint8_t *tok = malloc(B * S * K + 1);
        float *xs = malloc((B * XSTRIDE(S) * H + 1) * sizeof(float)), *stats = malloc((B * 3 + 1) * sizeof(float));
        int32_t *counts = malloc((B + 1) * sizeof(int32_t));
        Span *spans = calloc(parts, sizeof(Span));
        pthread_t *ids = calloc(parts, sizeof(pthread_t));
        int failed = !tok || !xs || !stats || !counts || !spans || !ids;
        Py_BEGIN_ALLOW_THREADS
        if (!failed) prepare_rows(states.buf, mask.buf, B, S, H, K, center.buf, tok, xs, counts, stats);
        for (Py_ssize_t i = 0; i < parts && !failed; i++) {
            Span *p = &spans[i];
            *p = (Span){tok, xs, stats, wscale.buf, c0.buf, c1.buf, bconst.buf, W.buf, bias.buf, counts, wcorr.buf,
                        wpack.buf, B, S, H, K, V, tiles * i / parts, tiles * (i + 1) / parts, 0, activation,
                        NULL, NULL, NULL};
            Py_ssize_t width = (p->vt1 - p->vt0) * VT;
            p->cols = malloc((B * width + 1) * sizeof(int32_t)); /* pages touched only as far as written */
            p->vals = malloc((B * width + 1) * sizeof(float));
            p->nnz = malloc((B + 1) * sizeof(int32_t));
            failed = !p->cols || !p->vals || !p->nnz;
        }
        Py_ssize_t started = 1;
        if (!failed) {
            for (; started < parts; started++)
                if (pthread_create(&ids[started], NULL, run_span, &spans[started])) break;
            run_span(&spans[0]); /* the calling thread's share; a span without a thread runs here too */
            for (Py_ssize_t i = started; i < parts; i++) run_span(&spans[i]);
            for (Py_ssize_t i = 1; i < started; i++) pthread_join(ids[i], NULL);
            for (Py_ssize_t i = 0; i < parts; i++) {
                if (spans[i].candidates < 0) failed = 1;
                candidates += spans[i].candidates;
                for (Py_ssize_t r = 0; r < B; r++) total += spans[i].nnz[r];
            }
        }
        Py_END_ALLOW_THREADS
        PyObject *row_counts = NULL, *cols = NULL, *vals = NULL;
        if (failed) {
            PyErr_NoMemory();
        } else {
            row_counts = PyByteArray_FromStringAndSize(NULL, B * 4);
            cols = PyByteArray_FromStringAndSize(NULL, total * 4);
            vals = PyByteArray_FromStringAndSize(NULL, total * 4);
        }
        if (row_counts && cols && vals) {
            int32_t *rc = (int32_t *)PyByteArray_AS_STRING(row_counts), *oc = (int32_t *)PyByteArray_AS_STRING(cols);
            float *ov = (float *)PyByteArray_AS_STRING(vals);
            for (Py_ssize_t r = 0; r < B; r++) {
                rc[r] = 0;
                for (Py_ssize_t i = 0; i < parts; i++) { /* spans ascend: so do the row's columns */
                    Span *p = &spans[i];
                    Py_ssize_t n = p->nnz[r], at = r * (p->vt1 - p->vt0) * VT;
                    memcpy(oc, p->cols + at, n * sizeof(int32_t));
                    memcpy(ov, p->vals + at, n * sizeof(float));
                    oc += n;
                    ov += n;
                    rc[r] += (int32_t)n;
                }
            }
            result = Py_BuildValue("NNNn", row_counts, cols, vals, candidates);
        } else {
            Py_XDECREF(row_counts);
            Py_XDECREF(cols);
            Py_XDECREF(vals);
        }
        for (Py_ssize_t i = 0; spans && i < parts; i++) {
            free(spans[i].cols);
            free(spans[i].vals);
            free(spans[i].nnz);
        }
        free(spans);
        free(ids);
        free(tok);
        free(xs);
        free(stats);
        free(counts);
    }
#endif
done:
    for (size_t i = 0; i < sizeof(all) / sizeof(*all); i++) PyBuffer_Release(all[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"supported", py_supported, METH_NOARGS, "Whether this CPU runs the kernel (AVX-512 VNNI)."},
    {"run", py_run, METH_VARARGS, "The rows' SPLADE non-zeros from their states (see the comment above py_run)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_head", NULL, -1, methods};

PyMODINIT_FUNC PyInit__head(void) {
    PyObject *m = PyModule_Create(&module);
    if (m) {
        PyModule_AddIntConstant(m, "VOCAB_TILE", VT);
    }
    return m;
}
