"""The nodes of the graph, one module each; every class takes a `NodeHandle` (see `hw.node.Node`)."""
