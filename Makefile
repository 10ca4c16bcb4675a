CC ?= cc
CFLAGS ?= -O3
WARN = -std=c11 -Wall -Wextra
# OpenMP when the compiler has it; everything builds and passes without it.
OPENMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo -fopenmp)

.PHONY: all test clean

all: run

# portable build: plain -O3, one thread
run: run.c
	$(CC) $(WARN) $(CFLAGS) -o $@ run.c -lm

# fastest build for this machine: native SIMD and OpenMP threads
runomp: run.c
	$(CC) $(WARN) $(CFLAGS) -march=native $(OPENMP) -o $@ run.c -lm

# the suite runs with OpenMP (parallel kernels); ./run is the portable build it drives as a CLI
test_all: test_all.c run.c
	$(CC) $(WARN) $(CFLAGS) $(OPENMP) -o $@ test_all.c -lm

examples/embed: examples/embed.c run.c
	$(CC) $(WARN) $(CFLAGS) -o $@ examples/embed.c -lm

test: run test_all examples/embed
	./test_all

clean:
	rm -f run runomp test_all examples/embed
