"""TF Serving's protocol family: its REST API (with KServe V1's `:explain` verb) and its gRPC
`PredictionService`, each a translator over the data plane (`serving.plane`)."""
