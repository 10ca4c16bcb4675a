// A program that embeds run.c: load a model and its tokenizer, then stream a greedy continuation.
//   cc -O3 -Wall -Wextra -o embed examples/embed.c -lm          (or as C++: g++ -O3 -x c++ ...)
//   ./embed stories15M.bin tokenizer.bin "Once upon a time" 64
// Every call that can fail is checked: a library call returns NULL or -1 and says why in err.
#define RUN_LIBRARY
#include "../run.c"

#include <stdlib.h>
#include <string.h>

static int print_piece(const char *piece, void *user) {
    int *pieces = (int *)user;
    fputs(piece, stdout);
    fflush(stdout);
    (*pieces)++;
    return 0; // keep going
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: embed <checkpoint> <tokenizer> <prompt> <tokens to generate>\n");
        return 1;
    }
    char err[512];
    LmModel *model = lm_load(argv[1], err, sizeof err);
    if (model == NULL) { fprintf(stderr, "embed: %s\n", err); return 1; }
    LmTokenizer *tokenizer = lm_tokenizer_load(argv[2], lm_vocab_size(model), err, sizeof err);
    if (tokenizer == NULL) { fprintf(stderr, "embed: %s\n", err); lm_free(model); return 1; }
    LmSampler *sampler = lm_sampler_new(lm_vocab_size(model), 0.0f, 0.9f, 42); // temperature 0: greedy
    if (sampler == NULL) { fprintf(stderr, "embed: out of memory\n"); lm_tokenizer_free(tokenizer); lm_free(model); return 1; }

    int pieces = 0;
    LmGenerateOptions options;
    memset(&options, 0, sizeof options); // every option off: no limit, no echo, no callbacks
    options.max_tokens = atoi(argv[4]);
    options.echo_prompt = 1; // print the prompt too, as ./run does
    options.emit = print_piece;
    options.user = &pieces;
    LmGenerateStats stats;
    int positions = lm_generate(model, tokenizer, sampler, argv[3], &options, &stats, err, sizeof err);
    printf("\n");
    if (positions < 0) fprintf(stderr, "embed: %s\n", err);
    else fprintf(stderr, "embed: %d positions, %d tokens generated, %d pieces\n", positions, stats.generated, pieces);

    lm_sampler_free(sampler);
    lm_tokenizer_free(tokenizer);
    lm_free(model);
    return positions < 0;
}
