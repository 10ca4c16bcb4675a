// A host program with its own functions of the names an inference engine uses, including run.c:
// it must compile (with -Wall -Wextra -Werror) and run, because run.c's private names carry run_.
// Built and run by make test.
#include <stdio.h>
#include <string.h>

static int softmax(int x) { return x + 1; }
static int matmul(int x) { return x * 2; }
static void usage(void) { puts("host usage"); }
static int read_line(char *buf) { return (int)strlen(buf); }
static int rmsnorm(void) { return 3; }
static int forward_block(void) { return 4; }
static int sample_argmax(void) { return 5; }
static int encode_text(void) { return 6; }
static int parse_options(void) { return 7; }
static int map_file(void) { return 8; }
static int set_err(void) { return 9; }
static int is_space(int c) { return c == ' '; }
typedef struct { int x; } Options;
static int LmConfigure = 10; // (a host's own name that merely starts like ours)

#define RUN_LIBRARY
#include "../run.c"

int main(void) {
    char line[] = "abc";
    usage();
    int sum = softmax(1) + matmul(2) + read_line(line) + rmsnorm() + forward_block() + sample_argmax() + encode_text() +
              parse_options() + map_file() + set_err() + is_space(' ') + LmConfigure;
    Options o = {sum};
    printf("host names ok: %d %d\n", o.x, lm_vocab_size(NULL));
    return o.x == 2 + 4 + 3 + 3 + 4 + 5 + 6 + 7 + 8 + 9 + 1 + 10 ? 0 : 1;
}
