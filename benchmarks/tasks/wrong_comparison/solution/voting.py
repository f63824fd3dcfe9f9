VOTING_AGE = 18


def can_vote(age):
    """People of voting age or older may vote."""
    return age >= VOTING_AGE
