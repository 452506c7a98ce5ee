"""Pure computations over counts: rates and intervals (`rates`, `intervals`), the drift detector (`drift`) and its
backtest (`backtest`). No I/O here: callers bring rows or counts and get plain values back."""
