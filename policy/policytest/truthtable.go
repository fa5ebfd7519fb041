package policytest

import (
	"fmt"
	"strings"
)

// TruthTable holds one boolean per ordered pair of items; an unset cell
// prints as "?".
type TruthTable struct {
	Items []string
	index map[string]int
	value []bool
	set   []bool
}

// NewTruthTable makes a table over items, every cell unset, or set to
// *def when def is given.
func NewTruthTable(items []string, def *bool) *TruthTable {
	n := len(items)
	t := &TruthTable{Items: items, index: map[string]int{}, value: make([]bool, n*n), set: make([]bool, n*n)}
	for i, it := range items {
		t.index[it] = i
	}
	if def != nil {
		for i := range t.value {
			t.value[i], t.set[i] = *def, true
		}
	}
	return t
}

func (t *TruthTable) cell(from, to string) int {
	f, ok1 := t.index[from]
	g, ok2 := t.index[to]
	if !ok1 || !ok2 {
		panic(fmt.Sprintf("policytest: no cell %s -> %s", from, to)) // a typo in a case
	}
	return f*len(t.Items) + g
}

// Set sets from -> to.
func (t *TruthTable) Set(from, to string, v bool) {
	c := t.cell(from, to)
	t.value[c], t.set[c] = v, true
}

// Get returns from -> to and whether it is set.
func (t *TruthTable) Get(from, to string) (v, ok bool) {
	c := t.cell(from, to)
	return t.value[c], t.set[c]
}

// String prints the table: rows are sources, columns destinations,
// "." connected, "X" not, "?" unknown.
func (t *TruthTable) String() string {
	var b strings.Builder
	b.WriteString("from\\to")
	for _, to := range t.Items {
		b.WriteString("\t" + to)
	}
	for i, from := range t.Items {
		b.WriteString("\n" + from)
		for j := range t.Items {
			c := i*len(t.Items) + j
			mark := "?"
			if t.set[c] {
				mark = "X"
				if t.value[c] {
					mark = "."
				}
			}
			b.WriteString("\t" + mark)
		}
	}
	return b.String()
}
