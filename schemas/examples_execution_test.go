package schemas_test

// executionExamples returns one valid event of each of the area's types.
func executionExamples() map[string]example {
	return map[string]example{}
}
