// fuzz.c — fuzz targets for everything run.c reads from strangers. One target per build:
//   -DFUZZ_CHECKPOINT  checkpoint loading (every format: v0/v1/v2/v3) and one forward step
//   -DFUZZ_TOKENIZER   tokenizer loading (llama2.c's and run.c's formats), then encode and decode
//   -DFUZZ_ENCODE      lm_encode of arbitrary bytes with the Llama 2 tokenizer, and the GPT-2,
//                      Llama 3 and Qwen2 pre-tokenizer splits over the same bytes
//   -DFUZZ_CHAT        chat-template rendering of arbitrary system/user text for every template
//   -DFUZZ_CLI         command-line parsing of arbitrary arguments
//   -DFUZZ_GGUF        a GGUF file: the container, the model (one forward step when small), its
//                      tokenizer (encode, decode, every chat template)
// With clang and -fsanitize=fuzzer it is a libFuzzer target (make fuzz); with any compiler it is a
// driver that replays the files named on its command line (a corpus), e.g. the regression cases.
#define main run_cli_main // the command line comes along, for its parser (FUZZ_CLI)
#include "../run.c"
#undef main

#ifndef FUZZ_TOKENIZER_PATH
#define FUZZ_TOKENIZER_PATH "tokenizer.bin"
#endif

// Writes data to a file of this process's own and returns its path (the loaders take paths).
static const char *as_file(const uint8_t *data, size_t size) {
    static char path[64]; // fuzzing is single-threaded; the path is fixed per process
    if (!path[0]) snprintf(path, sizeof path, "/tmp/runc_fuzz_%d.bin", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    return path;
}

static char *as_string(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (s) { memcpy(s, data, size); s[size] = '\0'; }
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
#if defined(FUZZ_CHECKPOINT)
    const char *path = as_file(data, size);
    LmModel *m = path ? lm_load(path, NULL, 0) : NULL;
    if (m && (uint64_t)m->config.dim * m->config.n_layers < (1u << 22)) { // small enough to run one step
        lm_forward(m, 0, 0);
        lm_tokenizer_free(lm_tokenizer_load(path, lm_vocab_size(m), NULL, 0)); // an embedded tokenizer
    }
    lm_free(m);
#elif defined(FUZZ_TOKENIZER)
    const char *path = as_file(data, size);
    LmTokenizer *t = path ? lm_tokenizer_load(path, 0, NULL, 0) : NULL;
    if (t) {
        int ids[256];
        int n = lm_encode(t, "Hello, world! 你好 \xF0\x9F\x98\x80  123", 1, 1, ids, 256);
        for (int i = 1; i < n; i++) lm_decode(t, ids[i - 1], ids[i]);
        for (int i = 0; i < t->vocab_size && i < 4096; i++) lm_decode(t, i - 1, i);
        LmTokens out = {NULL, 0, 0};
        for (int k = 1; k < LM_CHAT_N; k++) { out.n = 0; run_render_turn(t, (LmChatTemplate)k, &out, 1, "sys", "user"); }
        free(out.ids);
    }
    lm_tokenizer_free(t);
#elif defined(FUZZ_ENCODE)
    static LmTokenizer *t;
    if (!t) t = lm_tokenizer_load(FUZZ_TOKENIZER_PATH, 0, NULL, 0);
    char *text = as_string(data, size);
    if (t && text) {
        int cap = (int)size + 3, *ids = malloc((size_t)cap * sizeof(int));
        int n = ids ? lm_encode(t, text, 1, 1, ids, cap) : -1;
        for (int i = 1; i < n; i++) lm_decode(t, ids[i - 1], ids[i]);
        free(ids);
        LmText x = {(const unsigned char *)text, strlen(text)};
        for (int split = 1; split <= 3; split++)
            for (size_t pos = 0; pos < x.n;) {
                size_t len = run_pretoken_length((LmSplit)split, x, pos);
                assert(len >= 1 && pos + len <= x.n);
                pos += len;
            }
    }
    free(text);
#elif defined(FUZZ_CHAT)
    static LmTokenizer *t;
    if (!t) t = lm_tokenizer_load(FUZZ_TOKENIZER_PATH, 0, NULL, 0);
    char *text = as_string(data, size);
    if (t && text) {
        char *user = strchr(text, '\n'); // the first line is the system prompt, the rest the message
        if (user) *user++ = '\0'; else user = text;
        LmTokens out = {NULL, 0, 0};
        for (int k = 0; k < LM_CHAT_N; k++) {
            out.n = 0;
            run_render_turn(t, (LmChatTemplate)k, &out, k % 2, text, user);
        }
        free(out.ids);
    }
    free(text);
#elif defined(FUZZ_GGUF)
    const char *path = as_file(data, size);
    LmModel *m = path ? lm_load(path, NULL, 0) : NULL;
    LmTokenizer *t = path ? lm_tokenizer_load(path, m ? lm_vocab_size(m) : 0, NULL, 0) : NULL;
    if (m && (uint64_t)m->config.dim * m->config.n_layers < (1u << 22)) lm_forward(m, 0, 0);
    if (t) {
        int ids[256];
        int n = lm_encode(t, "Hello, world! <think> 你好 \xF0\x9F\x98\x80  123", 1, 1, ids, 256);
        for (int i = 1; i < n; i++) lm_decode(t, ids[i - 1], ids[i]);
        LmTokens out = {NULL, 0, 0};
        for (int k = 1; k < LM_CHAT_N; k++) { out.n = 0; run_render_turn(t, (LmChatTemplate)k, &out, 1, "sys", "user"); }
        free(out.ids);
    }
    lm_tokenizer_free(t);
    lm_free(m);
#elif defined(FUZZ_CLI)
    char *args = as_string(data, size), *argv[65] = {"run"};
    int argc = 1;
    for (char *p = args; p && argc < 64 && p < args + size;) { // NUL-separated arguments
        argv[argc++] = p;
        p += strlen(p) + 1;
    }
    argv[argc] = NULL;
    LmOptions o;
    FILE *saved = stderr;
    stderr = fopen("/dev/null", "w"); // one line per bad flag is the expected behaviour, not news
    run_parse_options(argc, argv, &o);
    fclose(stderr);
    stderr = saved;
    free(args);
#else
#error "define one FUZZ_ target"
#endif
    return 0;
}

// Each target uses some of the helpers above and of run.c's command line; this keeps the others used.
void lm_fuzz_keep(void);
void lm_fuzz_keep(void) { (void)as_file; (void)as_string; (void)run_parse_options; }

#ifndef LM_LIBFUZZER
// The replay driver: each file named on the command line is one input.
int main(int argc, char **argv) {
    int count = 0;
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) { fprintf(stderr, "fuzz: cannot open %s\n", argv[i]); return 1; }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc((size_t)n + 1);
        size_t got = fread(buf, 1, (size_t)n, f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, got);
        free(buf);
        count++;
    }
    printf("fuzz: replayed %d inputs\n", count);
    return 0;
}
#endif
