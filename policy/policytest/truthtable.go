package policytest

import (
	"fmt"
	"strings"
)

// TruthTable holds one boolean per (row, column) pair: rows are sources,
// columns destinations. An unset cell prints as "?".
type TruthTable struct {
	Rows, Cols []string
	rowIndex   map[string]int
	colIndex   map[string]int
	value      []bool
	set        []bool
}

// NewTruthTable makes a square table over items (every ordered pair),
// every cell unset, or set to *def when def is given.
func NewTruthTable(items []string, def *bool) *TruthTable {
	return NewTruthTableRect(items, items, def)
}

// NewTruthTableRect makes a table from rows to cols: a case that probes a
// few destinations (a pod just attached, a pod on a restarting node) from
// every pod.
func NewTruthTableRect(rows, cols []string, def *bool) *TruthTable {
	n := len(rows) * len(cols)
	t := &TruthTable{Rows: rows, Cols: cols, rowIndex: map[string]int{}, colIndex: map[string]int{},
		value: make([]bool, n), set: make([]bool, n)}
	for i, it := range rows {
		t.rowIndex[it] = i
	}
	for i, it := range cols {
		t.colIndex[it] = i
	}
	if def != nil {
		for i := range t.value {
			t.value[i], t.set[i] = *def, true
		}
	}
	return t
}

func (t *TruthTable) cell(from, to string) int {
	f, ok1 := t.rowIndex[from]
	g, ok2 := t.colIndex[to]
	if !ok1 || !ok2 {
		panic(fmt.Sprintf("policytest: no cell %s -> %s", from, to)) // a typo in a case
	}
	return f*len(t.Cols) + g
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
	for _, to := range t.Cols {
		b.WriteString("\t" + to)
	}
	for i, from := range t.Rows {
		b.WriteString("\n" + from)
		for j := range t.Cols {
			c := i*len(t.Cols) + j
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
