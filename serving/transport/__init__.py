"""The servers the protocols ride on: HTTP connections and bodies within the limits, the gRPC
server, and the ports they listen on."""
