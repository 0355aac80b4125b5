package schemas_test

// quotaExamples returns one valid event of each of the area's types.
func quotaExamples() map[string]example {
	return map[string]example{}
}
