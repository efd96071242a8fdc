"""Everything that talks to model servers: the shared client, provider adapters, the forwarding stage."""
