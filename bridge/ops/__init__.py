"""Operating Kanal: `kanal doctor`, `kanal migrate-db`, the `kanal up` sandbox and its local Synapse."""
