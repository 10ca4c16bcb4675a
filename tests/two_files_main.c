// A program of two files that both include run.c (make test builds it from this file and
// tests/two_files_other.c): this one includes it twice, the declarations then the engine, and
// the other file includes the declarations only.
#define RUN_DECLARATIONS_ONLY
#include "../run.c"
#undef RUN_DECLARATIONS_ONLY
#define RUN_LIBRARY
#include "../run.c"

int generate_in_other_file(const char *checkpoint, const char *tokenizer, char *out, size_t cap); // tests/two_files_other.c

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: two_files <checkpoint> <tokenizer>\n"); return 2; }
    char text[4096];
    if (generate_in_other_file(argv[1], argv[2], text, sizeof text) != 0) return 1;
    printf("%s\n", text);
    return 0;
}
