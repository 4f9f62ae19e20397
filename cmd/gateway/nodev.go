//go:build !dev

package main

import (
	"context"
	"errors"
	"io"
)

// runDev is not in the production binary: the simulators and the embedded
// Redis are built only with the dev tag.
func runDev(context.Context, io.Writer, io.Writer) error {
	return errors.New("this binary was built without the dev command (it links no simulator); run it from the source tree with `go tool task dev`")
}
