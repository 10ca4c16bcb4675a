// A program that embeds run.c: load a model and a tokenizer, then stream a greedy continuation.
//   cc -O3 -o embed examples/embed.c -lm
//   ./embed stories15M.bin tokenizer.bin "Once upon a time" 64
#define RUN_NO_MAIN
#include "../run.c"

static int print_piece(const char *piece, void *user) {
    int *count = user;
    fputs(piece, stdout);
    fflush(stdout);
    (*count)++;
    return 0; // keep going
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: embed <checkpoint> <tokenizer> <prompt> <steps>\n");
        return 1;
    }
    char err[512];
    LmModel *model = lm_load(argv[1], err, sizeof err);
    if (model == NULL) { fprintf(stderr, "embed: %s\n", err); return 1; }
    LmTokenizer *tokenizer = lm_tokenizer_load(argv[2], lm_vocab_size(model), err, sizeof err);
    if (tokenizer == NULL) { fprintf(stderr, "embed: %s\n", err); lm_free(model); return 1; }
    LmSampler *sampler = lm_sampler_new(lm_vocab_size(model), 0.0f, 0.9f, 42); // temperature 0: greedy

    int pieces = 0;
    int positions = lm_generate(model, tokenizer, sampler, argv[3], atoi(argv[4]), print_piece, &pieces, err, sizeof err);
    printf("\n");
    if (positions < 0) fprintf(stderr, "embed: %s\n", err);
    else fprintf(stderr, "embed: %d positions, %d pieces\n", positions, pieces);

    lm_sampler_free(sampler);
    lm_tokenizer_free(tokenizer);
    lm_free(model);
    return positions < 0;
}
