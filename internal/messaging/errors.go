package messaging

import (
	"sort"
	"strings"
)

// FieldError points at one bad field of a draft, by its JSON name
// ("to.phone", "vars.name").
type FieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

// InvalidError is why a draft cannot be made into a message: every bad
// field, each with what is wrong and how to fix it. The API answers it
// with 422.
type InvalidError struct {
	Errors []FieldError
}

func (e *InvalidError) Error() string {
	if len(e.Errors) == 0 {
		return "invalid message"
	}
	s := e.Errors[0].Field + ": " + e.Errors[0].Detail
	if len(e.Errors) > 1 {
		s += " (and more: see errors)"
	}
	return s
}

// Invalid is an *InvalidError of one field.
func Invalid(field, detail string) *InvalidError {
	return &InvalidError{Errors: []FieldError{{Field: field, Detail: detail}}}
}

// sorted orders field errors by field, for answers that do not depend on
// a map's order.
func sorted(errs []FieldError) []FieldError {
	sort.SliceStable(errs, func(i, j int) bool { return strings.Compare(errs[i].Field, errs[j].Field) < 0 })
	return errs
}
