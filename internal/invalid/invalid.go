// Package invalid is how the domain says what is wrong with what it was
// asked to do: an Error lists each bad field, with what is wrong and how
// to fix it. The API answers it with 422 and the fields; every domain
// package returns it, so the HTTP layer maps one type.
package invalid

import (
	"fmt"
	"sort"
	"strings"
)

// FieldError points at one bad field by its JSON name ("to.phone",
// "vars.name").
type FieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

// Error is why a request cannot be done: every bad field.
type Error struct {
	Errors []FieldError
}

func (e *Error) Error() string {
	if len(e.Errors) == 0 {
		return "invalid request"
	}
	s := e.Errors[0].Field + ": " + e.Errors[0].Detail
	if len(e.Errors) > 1 {
		s += " (and more: see errors)"
	}
	return s
}

// Field is an *Error of one field.
func Field(field, detail string) *Error {
	return &Error{Errors: []FieldError{{Field: field, Detail: detail}}}
}

// List collects field errors.
type List []FieldError

// Add appends a field error, its detail formatted.
func (l *List) Add(field, format string, a ...any) {
	*l = append(*l, FieldError{Field: field, Detail: fmt.Sprintf(format, a...)})
}

// Err is the list as an *Error, or nil when it is empty.
func (l List) Err() error {
	if len(l) == 0 {
		return nil
	}
	return &Error{Errors: l}
}

// Sorted orders field errors by field, for answers that do not depend on
// a map's order.
func Sorted(errs []FieldError) []FieldError {
	sort.SliceStable(errs, func(i, j int) bool { return strings.Compare(errs[i].Field, errs[j].Field) < 0 })
	return errs
}
