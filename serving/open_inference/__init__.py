"""The Open Inference Protocol (V2: KServe, Triton, MLServer): REST, gRPC and Triton's model
configuration, statistics and repository extensions, sharing their wire constants (`wire`) and
model names (`names`), each a translator over the data plane (`serving.plane`)."""
