# Tests of data.oslo_opa.lib.py_lower (casefold.rego); each expected value is
# what Python's str.lower() returns.  Strings with combining or control
# characters are written with base64.decode, never with backslash escapes
# (regopy does not unescape string literals).
package oslo_opa.lib_test

import data.oslo_opa.lib.py_lower

test_py_lower_ascii if {
	py_lower("Member") == "member"
	py_lower("") == ""
	py_lower("ADMIN_Role-1.x:y") == "admin_role-1.x:y"
	py_lower("I") == "i"
}

test_py_lower_ascii_control_characters if {
	# "A\tB\x7f" -> "a\tb\x7f"
	py_lower(base64.decode("QQlCfw==")) == base64.decode("YQlifw==")
}

test_py_lower_latin1_and_beyond if {
	py_lower("Rôle_ÀÉÎ") == "rôle_àéî"
	py_lower("ẞß") == "ßß"
	py_lower("ǅǄǆ") == "ǆǆǆ"
	py_lower("ⅫⒶ") == "ⅻⓐ"
	py_lower("ＡＢ") == "ａｂ"
}

test_py_lower_astral if {
	py_lower("𐐀𞤀𖹀") == "𐐨𞤢𖹠"
}

test_py_lower_dotted_capital_i if {
	# U+0130 lowers to "i" followed by U+0307 COMBINING DOT ABOVE.
	py_lower("İ") == base64.decode("acyH")
	py_lower("İSTANBUL") == concat("", [base64.decode("acyH"), "stanbul"])
}

test_py_lower_sigma_alone if {
	py_lower("Σ") == "σ"
	py_lower("ΣΣ") == "σς"
	py_lower("ΣΣΣ") == "σσς"
}

test_py_lower_sigma_final if {
	py_lower("ΟΔΟΣ") == "οδος"
	py_lower("AΣ") == "aς"
	py_lower("ǅΣ") == "ǆς"
	py_lower("ªΣ") == "ªς"
	py_lower("ⓐΣ") == "ⓐς"
	py_lower("ΟΔΟΣ ΟΔΟΣ") == "οδος οδος"
}

test_py_lower_sigma_not_final if {
	py_lower("AΣb") == "aσb"
	py_lower("1Σ") == "1σ"
	py_lower(" Σ") == " σ"
	py_lower("AΣ.Σ") == "aσ.ς"
	py_lower("Σ.Σ") == "σ.ς"
}

test_py_lower_sigma_case_ignorable_before if {
	# "A\u0301Σ" -> "a\u0301ς": the combining acute accent is skipped.
	py_lower(base64.decode("QcyBzqM=")) == base64.decode("YcyBz4I=")

	# "A\u00adΣ" -> "a\u00adς": so is the soft hyphen.
	py_lower(base64.decode("QcKtzqM=")) == base64.decode("YcKtz4I=")

	# "A\u02b0\u0301Σ" -> "a\u02b0\u0301ς": U+02B0 is cased but also
	# case-ignorable, so it is skipped as well.
	py_lower(base64.decode("QcqwzIHOow==")) == base64.decode("YcqwzIHPgg==")

	# "A\tΣ" -> "a\tσ": a tab is neither.
	py_lower(base64.decode("QQnOow==")) == base64.decode("YQnPgw==")

	# Only case-ignorable characters before: not final.
	py_lower("'Σ") == "'σ"
}

test_py_lower_sigma_case_ignorable_after if {
	py_lower("AΣ'") == "aς'"
	py_lower("AΣ'B") == "aσ'b"
	py_lower("AΣ’") == "aς’"
	py_lower("AΣ’s") == "aσ’s"
}

test_py_lower_sigma_mixed if {
	# "ΣΑΣ\u0301 ΣΑ\u0313Σ" -> "σας\u0301 σἀς"
	py_lower(base64.decode("zqPOkc6jzIEgzqPOkcyTzqM=")) == base64.decode("z4POsc+CzIEgz4POscyTz4I=")
}

test_py_lower_non_ascii_without_uppercase if {
	py_lower("οδος") == "οδος"
	py_lower("日本語") == "日本語"
	py_lower("ς") == "ς"
}
