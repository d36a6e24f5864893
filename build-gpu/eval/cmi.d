build-gpu/eval/cmi.o: eval/cmi.c eval/cmi.h eval/../nn/error.h
eval/cmi.h:
eval/../nn/error.h:
