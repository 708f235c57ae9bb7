"""The built-in concurrency autoscaler: a pure decision function and the loop that feeds it."""
