//go:build race

package service_test

// slowdown is how much slower the race detector makes the code: timing
// limits are measured by the plain test run (go tool task test, CI); under
// -race they are widened by this much, so that run checks correctness.
const slowdown = 10
