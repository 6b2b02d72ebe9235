// Package textutil has small string helpers.
package textutil

import "strings"

// Title upper-cases the first letter of every word in s.
func Title(s string) string {
	words := strings.Fields(s)
	for i, w := range words {
		
	}
	return strings.Join(words, " ")
}
