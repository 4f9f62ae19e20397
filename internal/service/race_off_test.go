//go:build !race

package service_test

// slowdown: see race_on_test.go.
const slowdown = 1
