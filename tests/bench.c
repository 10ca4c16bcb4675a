// bench.c — speed of run.c: generation and prompt (prefill) tok/s against the memory-bandwidth limit.
//   make bench                                   the default set (see below)
//   build/runbench --shapes 110m,1.1b --dtypes q8_0,q4_0,Q4_K_M --threads 1,2 --gen 32 --prompt 512
//   build/runbench --model stories15M.bin           an existing checkpoint
//   build/runbench --kernels portable,avx2          kernel sets to compare (default: every one this CPU runs)
//   build/runbench --repeat 3                       runs of each measurement, the best shown (default 2)
//   build/runbench --no-mmap 1                      weights read into memory (huge pages), not mapped
//   build/runbench --matmul 1 [--dtypes fp16,Q4_1]   make bench-kernels: each type's one-token matmul, in cache and streamed
//   build/runbench --long 1                         make bench-long: a Llama-3.2-1B shape at long context
//       [--dtypes q8_0,q4_0] [--caches f32,f16,bf16,q8_0] [--depths 0,4096,16384,32768] [--prompts 512,4096,16384]
//       [--kernels avx2,avx512]                 (long: the best set this CPU runs unless --kernels names some)
// Checkpoints of each shape are random weights made by tests/bench_models.py (cached in build/bench).
// Generation reads every weight once per token, so its limit is the read bandwidth divided by the
// bytes of weights per token; the table shows the fraction of that limit reached.
#define RUN_LIBRARY
#include "../run.c"
#include <sys/time.h>

static double seconds(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

// Read bandwidth in GB/s with n threads: the best of 5 passes summing a 1 GiB buffer.
static double read_bandwidth(int threads) {
    size_t n = (size_t)1 << 28; // floats
    float *buf = (float *)run_calloc_streamed(n * sizeof(float)); // (huge pages where asked for, as the weights read into memory get)
    if (!buf) return 0;
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 7);
    double best = 0;
    for (int pass = 0; pass < 5; pass++) {
        double start = seconds(), total = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) reduction(+ : total) schedule(static)
#endif
        for (int chunk = 0; chunk < 256; chunk++) {
            const float *p = buf + (size_t)chunk * (n / 256);
            float acc[16] = {0};
            for (size_t i = 0; i < n / 256; i += 16)
                for (int k = 0; k < 16; k++) acc[k] += p[i + k];
            for (int k = 0; k < 16; k++) total += acc[k];
        }
        double gbs = (double)n * sizeof(float) / (seconds() - start) / 1e9;
        if (total > 0 && gbs > best) best = gbs;
    }
    (void)threads;
    free(buf);
    return best;
}

static uint64_t matrix_bytes(const LmMatrix *m) {
    uint64_t count = (uint64_t)m->rows * (uint64_t)m->cols;
    if (run_types[m->type].unpack) return (uint64_t)m->rows * m->row_bytes; // GGUF's blocks
    uint64_t bytes = run_weight_bytes(m->type, count);
    if (m->type == LM_Q8_GROUPS || m->type == LM_Q4_GROUPS) bytes += count / (uint64_t)m->group_size * (m->type == LM_Q8_GROUPS ? 4 : 2);
    return bytes;
}

// Weight bytes one generated token reads: every layer matrix and the classifier (one embedding row
// aside, which is negligible).
static uint64_t bytes_per_token(const LmModel *m) {
    uint64_t total = matrix_bytes(&m->weights.wcls);
    for (int l = 0; l < m->config.n_layers; l++) {
        const LmLayer *ly = &m->weights.layers[l];
        const LmMatrix *mats[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w1, &ly->w2, &ly->w3};
        for (int i = 0; i < 7; i++) total += matrix_bytes(mats[i]);
    }
    return total;
}

static int split_list(char *s, char **out, int max) {
    int n = 0;
    char *tok = strtok(s, ",");
    for (; tok && n < max; tok = strtok(NULL, ",")) out[n++] = tok;
    if (tok) fprintf(stderr, "bench: a list of more than %d items: '%s' and those after it left out\n", max, tok);
    return n;
}

static char *kernel_v[LM_KERNELS_N];
static int n_kernels, repeats = 2;
static LmLoadOptions load_options; // --no-mmap: .in_memory

static void bench_model(const char *label, const char *dtype, const char *path, const int *threads, int n_threads, const double *bw,
                        int gen, int prompt) {
    char err[512];
    LmModel *m = lm_load_with(path, &load_options, err, sizeof err);
    if (!m) { fprintf(stderr, "bench: %s\n", err); return; }
    int vocab = lm_vocab_size(m), ctx = lm_context_length(m);
    if (prompt > ctx) prompt = ctx;
    if (gen + 2 > ctx) gen = ctx - 2;
    int *tokens = malloc((size_t)prompt * sizeof(int));
    unsigned long long rng = 42;
    for (int i = 0; i < prompt; i++) tokens[i] = (int)(run_random_u32(&rng) % (unsigned)vocab);
    double gb = (double)bytes_per_token(m) / 1e9;
    for (int ti = 0; ti < n_threads; ti++) {
        double prev_gen = 0, prev_pp = 0;
        for (int k = 0; k < n_kernels; k++) {
            if (lm_set_kernels(m, kernel_v[k]) != 0) continue;
            lm_set_threads(m, threads[ti]);
            lm_forward(m, 1, 0); // warm up the threads and the first pages
            lm_forward(m, 1, 1);
            double gen_tps = 0, pp_tps = 0;
            for (int rep = 0; rep < repeats; rep++) { // the best of the repeats: noise only ever slows
                double start = seconds();
                for (int i = 0; i < gen; i++) lm_forward(m, tokens[i % prompt], i);
                double tps = gen / (seconds() - start);
                if (tps > gen_tps) gen_tps = tps;
                start = seconds();
                lm_forward_batch(m, tokens, prompt, 0);
                tps = prompt / (seconds() - start);
                if (tps > pp_tps) pp_tps = tps;
            }
            double limit = bw[ti] / gb;
            char vs[32] = "";
            if (prev_gen > 0) snprintf(vs, sizeof vs, "%.2fx / %.2fx", gen_tps / prev_gen, pp_tps / prev_pp);
            printf("| %-12s | %-11s | %-9s | %3d | %9.1f | %9.1f | %9.1f | %5.2f | %-15s |\n", label, dtype, kernel_v[k], threads[ti], gen_tps, pp_tps,
                   limit, gen_tps / limit, vs);
            fflush(stdout);
            prev_gen = gen_tps;
            prev_pp = pp_tps;
        }
    }
    free(tokens);
    lm_free(m);
}

// Fills positions 0..depth-1 of every layer's KV cache with random keys and values (the attention's
// work does not depend on them), as a prompt of that length would, without the hours of prefill.
static void fill_cache(LmModel *m, int depth) {
    const LmConfig *c = &m->config;
    LmRunState *s = &m->state;
    unsigned long long rng = 7;
    float v[4096];
    for (int l = 0; l < c->n_layers; l++) {
        size_t head_bytes = (size_t)s->cache_positions[l] * s->value_row_bytes;
        for (int g = 0; g < c->n_kv_heads; g++)
            for (int t = 0; t < depth; t++) {
                int row = t % s->cache_positions[l];
                for (int e = 0; e < c->head_size; e++) v[e] = 2.0f * run_random_f32(&rng) - 1.0f;
                run_store_key(s->key_cache + s->cache_offset[l] + g * head_bytes + (size_t)(row / LM_KEY_TILE) * s->key_tile_bytes, row % LM_KEY_TILE, v,
                              c->head_size, c->cache_type);
                run_store_values(s->value_cache + s->cache_offset[l] + g * head_bytes + (size_t)row * s->value_row_bytes, v, c->head_size, c->cache_type);
            }
    }
}

// Generation after caches filled to each depth, for each weight and cache type, against the limit of
// the bytes each token reads (weights + the cache up to that depth); then prefill of long prompts.
// The long-context model at path with that cache, context, kernel set and threads; NULL (said on
// stderr) when it cannot be.
static LmModel *load_long(const char *path, const char *cache, int context, const char *kernels, int threads) {
    LmLoadOptions o = load_options;
    o.cache_type = cache;
    o.context_length = context;
    char err[512];
    LmModel *m = lm_load_with(path, &o, err, sizeof err);
    if (!m) { fprintf(stderr, "bench: %s\n", err); return NULL; }
    if (lm_set_kernels(m, kernels) != 0) { fprintf(stderr, "bench: kernels %s: not on this CPU\n", kernels); lm_free(m); return NULL; }
    lm_set_threads(m, threads);
    return m;
}

// kernels: the sets to compare (none: the best this CPU runs).
static int bench_long(char *dtypes, char *caches, char *depths, char *prompts, int threads, double bw, int gen, char **kernels, int nk) {
    char *best_only[1] = {"auto"};
    if (nk == 0) kernels = best_only, nk = 1;
    char *dtype_v[8], *cache_v[8], *depth_v[16], *prompt_v[16];
    int nd = split_list(dtypes, dtype_v, 8), nc = split_list(caches, cache_v, 8), ndepth = split_list(depths, depth_v, 16), np = split_list(prompts, prompt_v, 16);
    int max_depth = 0, max_prompt = 0;
    for (int i = 0; i < ndepth; i++) max_depth = atoi(depth_v[i]) > max_depth ? atoi(depth_v[i]) : max_depth;
    for (int i = 0; i < np; i++) max_prompt = atoi(prompt_v[i]) > max_prompt ? atoi(prompt_v[i]) : max_prompt;
    printf("| weights | cache | kernels   | depth  | gen tok/s | MB / token (weights + cache) | limit t/s | frac  | x depth 0 |\n");
    printf("|---------|-------|-----------|--------|-----------|------------------------------|-----------|-------|-----------|\n");
    fflush(stdout);
    char paths[8][1024];
    for (int d = 0; d < nd; d++) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/bench_models.py 1b-long %s", dtype_v[d]);
        FILE *p = popen(cmd, "r");
        paths[d][0] = 0;
        if (!p || !fgets(paths[d], sizeof paths[d], p)) { fprintf(stderr, "bench: %s failed\n", cmd); if (p) pclose(p); continue; }
        pclose(p);
        paths[d][strcspn(paths[d], "\n")] = 0;
        for (int k = 0; k < nc * nk; k++) {
            LmModel *m = load_long(paths[d], cache_v[k / nk], max_depth + gen, kernels[k % nk], threads);
            if (!m) continue;
            double at_zero = 0;
            for (int i = 0; i < ndepth; i++) {
                int depth = atoi(depth_v[i]);
                fill_cache(m, depth);
                lm_forward(m, 1, depth); // (warm up)
                double best = 0;
                for (int rep = 0; rep < repeats; rep++) {
                    double start = seconds();
                    for (int t = 0; t < gen; t++) lm_forward(m, (t * 977 + 13) % lm_vocab_size(m), depth + t);
                    double tps = gen / (seconds() - start);
                    best = tps > best ? tps : best;
                }
                double cache_bytes = 2.0 * m->config.n_layers * m->config.n_kv_heads * (double)m->state.value_row_bytes * (depth + gen / 2);
                double bytes = (double)bytes_per_token(m) + cache_bytes, limit = bw * 1e9 / bytes;
                if (depth == 0) at_zero = best;
                printf("| %-7s | %-5s | %-9s | %6d | %9.2f | %11.0f + %-16.0f | %9.2f | %5.2f | %9.2f |\n", dtype_v[d], cache_v[k / nk], run_kernel_names[m->kernels], depth, best,
                       (double)bytes_per_token(m) / 1e6, cache_bytes / 1e6, limit, best / limit, at_zero > 0 ? best / at_zero : 0.0);
                fflush(stdout);
            }
            lm_free(m);
        }
    }
    printf("\n| weights | cache | kernels   | prompt | pp tok/s | x prompt %s |\n", prompt_v[0]);
    printf("|---------|-------|-----------|--------|----------|--------------|\n");
    fflush(stdout);
    const char *prefill_caches[] = {"f16"}; // (the default; a 16K prompt takes minutes)
    for (int d = 0; d < nd; d++) {
        if (!paths[d][0]) continue;
        for (int k = 0; k < (int)(sizeof prefill_caches / sizeof prefill_caches[0]) * nk; k++) {
            LmModel *m = load_long(paths[d], prefill_caches[k / nk], max_prompt, kernels[k % nk], threads);
            if (!m) continue;
            int *tokens = malloc((size_t)max_prompt * sizeof(int));
            for (int i = 0; i < max_prompt; i++) tokens[i] = (i * 7919 + 11) % lm_vocab_size(m);
            double first = 0;
            for (int i = 0; i < np; i++) {
                int n = atoi(prompt_v[i]);
                double start = seconds();
                lm_forward_batch(m, tokens, n, 0);
                double tps = n / (seconds() - start);
                if (i == 0) first = tps;
                printf("| %-7s | %-5s | %-9s | %6d | %8.1f | %12.2f |\n", dtype_v[d], prefill_caches[k / nk], run_kernel_names[m->kernels], n, tps, tps / first);
                fflush(stdout);
            }
            free(tokens);
            lm_free(m);
        }
    }
    return 0;
}

// make bench-kernels: each weight type's generation matmul (one token, one thread) in each kernel set,
// in GMAC/s, with the weights in cache (2048 x 2048) and streamed from memory (about 256 MiB, 4096
// columns, huge pages where the OS gives them), and the streamed bytes per second over the read
// bandwidth. Random values (sane fp16 scales for the block types), so every type is timed, Q2_K and
// Q3_K included, without a model file. run.c's own q8_0 and q4_0 (the GROUPS types) keep their scales
// apart, as export.py writes them: groups of 64 (fp32 scales) and 32 (fp16), the scales a second stream.
static uint64_t bench_rng = 88172645463325252ull;
static unsigned char bench_byte(void) {
    bench_rng ^= bench_rng << 13, bench_rng ^= bench_rng >> 7, bench_rng ^= bench_rng << 17;
    return (unsigned char)(bench_rng >> 24);
}

static void random_weights(unsigned char *p, size_t bytes, LmWeightType type) {
    const LmTypeTraits *tt = &run_types[type];
    if (type == LM_Q8_GROUPS || type == LM_Q4_GROUPS) { // any bytes (their scales lie apart)
        for (size_t i = 0; i < bytes; i++) p[i] = bench_byte();
        return;
    }
    if (!tt->unpack) { // floats: values in [-1, 1) of the type
        for (size_t e = 0; e < bytes / (size_t)tt->block_bytes; e++) {
            float v = (float)bench_byte() / 128.0f - 1.0f;
            if (type == LM_F32) memcpy(p + 4 * e, &v, 4);
            else {
                uint32_t bits;
                memcpy(&bits, &v, 4);
                uint16_t h = type == LM_BF16 ? (uint16_t)(bits >> 16) : (uint16_t)(0x3800 + bench_byte()); // (fp16: 0.5 to 1)
                memcpy(p + 2 * e, &h, 2);
            }
        }
        return;
    }
    for (size_t i = 0; i < bytes; i++) p[i] = bench_byte();
    int at[2] = {type == LM_Q6_K ? 208 : type == LM_Q2_K ? 80 : type == LM_Q3_K ? 108 : 0, tt->has_min ? (type == LM_Q2_K ? 82 : 2) : -1}; // (d, and min)
    for (size_t b = 0; b < bytes / (size_t)tt->block_bytes; b++)
        for (int k = 0; k < 2; k++)
            if (at[k] >= 0) {
                uint16_t h = (uint16_t)(0x211F + bench_byte() % 0x40); // (about 0.01)
                memcpy(p + b * (size_t)tt->block_bytes + at[k], &h, 2);
            }
}

// The group size export.py gives run.c's own integer types (32 for the block types, whose inputs are
// quantized in groups of 32), and the bytes of each group's scale (none for the block types).
static int bench_group_size(LmWeightType type) { return type == LM_Q8_GROUPS ? 64 : 32; }
static int bench_scale_bytes(LmWeightType type) { return type == LM_Q8_GROUPS ? 4 : type == LM_Q4_GROUPS ? 2 : 0; }

// Best GMAC/s of reps one-token matmuls of a rows x cols matrix of this type in this kernel set.
static double time_matvec(LmWeightType type, LmKernels kernels, int rows, int cols, int reps) {
    const LmTypeTraits *tt = &run_types[type];
    size_t row_bytes = (size_t)cols / (size_t)tt->block_values * (size_t)tt->block_bytes, groups = (size_t)cols / 32;
    int gs = bench_group_size(type), scale_bytes = bench_scale_bytes(type);
    size_t scales_bytes = (size_t)rows * (size_t)(cols / gs) * (size_t)scale_bytes;
    unsigned char *data = (unsigned char *)run_calloc_streamed((size_t)rows * row_bytes + scales_bytes);
    float *x = malloc(sizeof(float) * (size_t)cols), *out = malloc(sizeof(float) * (size_t)rows);
    LmModel m;
    memset(&m, 0, sizeof m);
    m.config.weight_type = type, m.config.group_size = gs, m.config.integer_activations = tt->integer;
    m.config.split_nibble_inputs = tt->split_nibbles || type == LM_Q4_GROUPS, m.kernels = kernels, m.threads = 1; // (as lm_load sets it)
    LmRunState *s = &m.state;
    s->xq = calloc((size_t)cols + 64, 1), s->xs = calloc(groups + 1, sizeof(float)), s->xsum = calloc(groups + 1, sizeof(int32_t));
    s->xsum16 = calloc(groups + 1, sizeof(int32_t)), s->xarranged = calloc((size_t)cols + 128, 1);
    double best = 0;
    if (data && x && out && s->xq && s->xs && s->xsum && s->xsum16 && s->xarranged) {
        random_weights(data, (size_t)rows * row_bytes, type);
        unsigned char *scales = data + (size_t)rows * row_bytes; // (the GROUPS types': after the values, as in a file)
        for (size_t i = 0; scale_bytes && i < scales_bytes / (size_t)scale_bytes; i++) {
            float f = 0.01f;
            uint16_t h = 0x211F; // (0.01)
            if (scale_bytes == 4) memcpy(scales + 4 * i, &f, 4);
            else memcpy(scales + 2 * i, &h, 2);
        }
        for (int i = 0; i < cols; i++) x[i] = (float)bench_byte() / 128.0f - 1.0f;
        LmMatrix w = {.data = data, .scales = scale_bytes ? scales : NULL, .rows = rows, .cols = cols, .type = type, .row_bytes = row_bytes,
                      .group_size = gs};
        LmMatmul job = {&w, out, rows};
        for (int r = 0; r < reps; r++) {
            double start = seconds();
            LmBatch in = run_make_batch(&m, x, 1, cols, cols); // (the input quantized for each matmul, as the forward pass does)
            run_matmul(&job, 1, &in, 1);
            double gmacs = (double)rows * cols / (seconds() - start) * 1e-9;
            if (gmacs > best) best = gmacs;
        }
    }
    free(data), free(x), free(out), free(s->xq), free(s->xs), free(s->xsum), free(s->xsum16), free(s->xarranged);
    return best;
}

static int bench_matmul(char **kernels, int nk, double bw, char **types, int ntypes) {
    printf("\n| type   | kernels   | in cache GMAC/s | streamed GMAC/s | GB/s  | frac  | x prev (cache / streamed) |\n");
    printf("|--------|-----------|-----------------|-----------------|-------|-------|---------------------------|\n");
    for (int type = LM_F32; type < LM_N_TYPES; type++) {
        const LmTypeTraits *tt = &run_types[type];
        int wanted = ntypes == 0;
        for (int i = 0; i < ntypes; i++) wanted |= !strcmp(types[i], tt->name);
        if (!wanted) continue;
        double prev[2] = {0, 0};
        for (int k = 0; k < nk; k++) {
            int set = -1;
            for (int i = 0; i < LM_KERNELS_N; i++)
                if (!strcmp(kernels[k], run_kernel_names[i]) && run_kernels_available((LmKernels)i)) set = i;
            if (set < 0) { printf("| %-6s | %-9s | not on this CPU |\n", tt->name, kernels[k]); continue; }
            size_t row_bytes = (size_t)4096 / (size_t)tt->block_values * (size_t)tt->block_bytes + (size_t)(4096 / bench_group_size((LmWeightType)type) * bench_scale_bytes((LmWeightType)type));
            int rows = (int)(((size_t)256 << 20) / row_bytes);
            double cached = time_matvec((LmWeightType)type, (LmKernels)set, 2048, 2048, 30);
            double streamed = time_matvec((LmWeightType)type, (LmKernels)set, rows, 4096, 5);
            double gbs = streamed * 1e9 * (double)row_bytes / 4096.0 / 1e9;
            char ratio[32] = "";
            if (prev[0] > 0) snprintf(ratio, sizeof ratio, "%.2fx / %.2fx", cached / prev[0], streamed / prev[1]);
            printf("| %-6s | %-9s | %15.1f | %15.1f | %5.1f | %5.2f | %-25s |\n", tt->name, kernels[k], cached, streamed, gbs, gbs / bw, ratio);
            fflush(stdout);
            prev[0] = cached, prev[1] = streamed;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    char shapes[256] = "110m,1.1b", dtypes[256] = "fp32,fp16,bf16,q8_0,q4_0,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,Q6_K,Q4_K_M,Q5_K_M,IQ4_NL,IQ4_XS,Q2_K,Q3_K", thread_list[256] = "", kernels[64] = "";
    const char *model = NULL;
    int gen = 32, prompt = 512, long_context = 0, dtypes_given = 0, matmul_only = 0;
    char caches[64] = "f32,f16,bf16,q8_0", depths[128] = "0,4096,16384,32768", prompts[128] = "512,4096,16384";
#ifdef _OPENMP
    snprintf(thread_list, sizeof thread_list, "1");
    for (int t = 2; t <= omp_get_num_procs(); t *= 2) snprintf(thread_list + strlen(thread_list), 16, ",%d", t);
#else
    snprintf(thread_list, sizeof thread_list, "1");
#endif
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--shapes")) snprintf(shapes, sizeof shapes, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--dtypes")) dtypes_given = snprintf(dtypes, sizeof dtypes, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) snprintf(thread_list, sizeof thread_list, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--gen")) gen = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt")) prompt = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--kernels")) snprintf(kernels, sizeof kernels, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--repeat")) repeats = atoi(argv[i + 1]) > 0 ? atoi(argv[i + 1]) : 1;
        else if (!strcmp(argv[i], "--no-mmap")) load_options.in_memory = atoi(argv[i + 1]) != 0;
        else if (!strcmp(argv[i], "--long")) long_context = atoi(argv[i + 1]) != 0;
        else if (!strcmp(argv[i], "--matmul")) matmul_only = atoi(argv[i + 1]) != 0;
        else if (!strcmp(argv[i], "--caches")) snprintf(caches, sizeof caches, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--depths")) snprintf(depths, sizeof depths, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--prompts")) snprintf(prompts, sizeof prompts, "%s", argv[i + 1]);
        else { fprintf(stderr, "bench: unknown option %s\n", argv[i]); return 1; }
    }
    if (argc % 2 == 0) {
        fprintf(stderr, "usage: bench [--shapes LIST] [--dtypes LIST] [--threads LIST] [--gen N] [--prompt N] [--model FILE] [--kernels LIST] [--repeat N] "
                        "[--no-mmap 1] [--long 1 [--caches LIST] [--depths LIST] [--prompts LIST]] [--matmul 1]\n");
        return 1;
    }
    if (long_context && !dtypes_given) snprintf(dtypes, sizeof dtypes, "q8_0,q4_0");
    char long_dtypes[256]; // (split_list cuts the list it splits)
    snprintf(long_dtypes, sizeof long_dtypes, "%s", dtypes);
    if (long_context && strchr(thread_list, ',')) *strchr(thread_list, ',') = 0; // (one thread count: the first)
    int kernels_given = kernels[0] != 0;
    if (kernels[0] == 0) // every set this CPU runs, slowest first
        for (int k = 0; k < LM_KERNELS_N; k++)
            if (run_kernels_available((LmKernels)k)) snprintf(kernels + strlen(kernels), 16, "%s%s", k ? "," : "", run_kernel_names[k]);
    char kernels_shown[64];
    snprintf(kernels_shown, sizeof kernels_shown, "%s", kernels);
    n_kernels = split_list(kernels, kernel_v, LM_KERNELS_N);
    char *shape_v[8], *dtype_v[32], *thread_v[16];
    int ns = split_list(shapes, shape_v, 8), nd = split_list(dtypes, dtype_v, 32), nt = split_list(thread_list, thread_v, 16);
    int threads[16];
    double bw[16];
    for (int i = 0; i < nt; i++) threads[i] = atoi(thread_v[i]);

    char cpu[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) { snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2); cpu[strcspn(cpu, "\n")] = 0; break; }
    if (f) fclose(f);
#ifdef _OPENMP
    int cores = omp_get_num_procs();
#else
    int cores = 1;
#endif
    printf("machine: %s, %d cores; kernel sets: %s (x prev: speed against the set above, generation / prefill)\n", cpu, cores, kernels_shown);
    printf("read bandwidth:");
    for (int i = 0; i < nt; i++) { bw[i] = read_bandwidth(threads[i]); printf(" %.1f GB/s (%d thread%s)", bw[i], threads[i], threads[i] > 1 ? "s" : ""); }
    if (matmul_only) {
        printf("\nmatmuls of one token, one thread: in cache 2048 x 2048, streamed 256 MiB x 4096 columns; frac: streamed GB/s over the read bandwidth\n");
        return bench_matmul(kernel_v, n_kernels, bw[0], dtype_v, dtypes_given ? nd : 0);
    }
    if (long_context) {
        printf("\nLlama-3.2-1B shape (dim 2048, 16 layers, 32 heads / 8 kv heads of 64, FFN 8192, vocab 128256, tied), random weights, %d thread%s; "
               "generation: %d tokens after a cache filled to each depth (best of %d); prefill: one prompt from position 0; weights %s\n\n",
               threads[0], threads[0] > 1 ? "s" : "", gen, repeats, load_options.in_memory ? "read into memory (--no-mmap)" : "mapped from the file");
        return bench_long(long_dtypes, caches, depths, prompts, threads[0], bw[0], gen, kernel_v, kernels_given ? n_kernels : 0);
    }
    printf("\ngeneration: %d tokens from position 0; prefill: one %d-token prompt (logits of the last token only); best of %d; weights %s\n\n",
           gen, prompt, repeats, load_options.in_memory ? "read into memory (--no-mmap)" : "mapped from the file");
    printf("| model        | dtype       | kernels   | thr | gen tok/s | pp tok/s  | limit t/s | frac  | x prev          |\n");
    printf("|--------------|-------------|-----------|-----|-----------|-----------|-----------|-------|-----------------|\n");
    fflush(stdout);
    if (model) {
        LmModel *m = lm_load(model, NULL, 0);
        LmModelInfo info;
        if (m) lm_model_info(m, &info);
        bench_model(model, m ? info.weight_type : "?", model, threads, nt, bw, gen, prompt);
        lm_free(m);
        return 0;
    }
    for (int s = 0; s < ns; s++)
        for (int d = 0; d < nd; d++) {
            char cmd[512], path[1024] = "";
            snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/bench_models.py %s %s", shape_v[s], dtype_v[d]);
            FILE *p = popen(cmd, "r");
            if (!p || !fgets(path, sizeof path, p)) { fprintf(stderr, "bench: %s failed\n", cmd); if (p) pclose(p); continue; }
            pclose(p);
            path[strcspn(path, "\n")] = 0;
            bench_model(shape_v[s], dtype_v[d], path, threads, nt, bw, gen, prompt);
        }
    return 0;
}
