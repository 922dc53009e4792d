//! Test support: real TCP servers that misbehave on request (resets, idle closes, hangs, garbage).
