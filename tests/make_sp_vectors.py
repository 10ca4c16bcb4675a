#!/usr/bin/env python3
"""Records SentencePiece's own ids for tok512.model as test vectors (Debian's python3-sentencepiece,
0.1.97, the version llama2.c's files were made with):
    apt-get install python3-sentencepiece
    /usr/bin/python3 tests/make_sp_vectors.py ../shared/models/stories260K/tok512.model > tests/vectors/tok512.tsv
"""
import json, sys
import sentencepiece as spm

texts = ["Once upon a time, there was a little girl named Lily.", "Once upon  a   time", "  leading and trailing  ",
         "runs    of     spaces\tand a tab", "line\nbreak", "Lily's mom said, \"Let's go!\"", "123 apples", "", " ",
         "x  y", "The  end.  ", "caf\u00e9 \u4e2d\u6587 \U0001F600"]
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
print("# ids from: /usr/bin/python3 tests/make_sp_vectors.py tok512.model (sentencepiece %s, no BOS); text as JSON, then ids"
      % spm.__version__)
for t in texts:
    print(json.dumps(t, ensure_ascii=False) + "\t" + " ".join(map(str, sp.encode(t))))
