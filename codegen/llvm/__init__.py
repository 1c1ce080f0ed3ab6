"""The native backend: graphs lowered to LLVM IR with llvmlite, optimized for the host CPU."""
