// Package spreadsheet holds what every CSV export of the gateway shares: a
// cell a spreadsheet would take for a formula (CSV injection) is written
// as text.
package spreadsheet

import "strings"

// Cell returns v as a spreadsheet shows it as text: a value starting with
// =, +, -, @, a tab or a carriage return gets a leading "'".
func Cell(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}
