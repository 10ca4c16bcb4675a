// The second file of tests/two_files_main.c's program: the lm_ declarations only.
#define RUN_DECLARATIONS_ONLY
#include "../run.c"

#include <string.h>

static int append(const char *piece, void *user) {
    char *out = (char *)user;
    if (strlen(out) + strlen(piece) < 4000) strcat(out, piece);
    return 0;
}

int generate_in_other_file(const char *checkpoint, const char *tokenizer, char *out, size_t cap);
int generate_in_other_file(const char *checkpoint, const char *tokenizer, char *out, size_t cap) {
    char err[256];
    if (cap < 4096) return -1;
    out[0] = '\0';
    LmModel *m = lm_load(checkpoint, err, sizeof err);
    LmTokenizer *t = m ? lm_tokenizer_load(tokenizer, lm_vocab_size(m), err, sizeof err) : NULL;
    LmSampler *s = t ? lm_sampler_new(lm_vocab_size(m), 0.0f, 0.9f, 1) : NULL;
    LmGenerateOptions options;
    memset(&options, 0, sizeof options);
    options.max_tokens = 10;
    options.echo_prompt = 1;
    options.emit = append;
    options.user = out;
    int rc = s && lm_generate(m, t, s, "hello", &options, NULL, err, sizeof err) >= 0 ? 0 : -1;
    if (rc != 0) fprintf(stderr, "two_files: %s\n", err);
    lm_sampler_free(s);
    lm_tokenizer_free(t);
    lm_free(m);
    return rc;
}
